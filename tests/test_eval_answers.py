"""Answer metrics: containment and character F1, checked by hand; refusals on borrowed questions."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.evaluation.answers import (
    char_f1,
    contains_answer,
    is_refusal,
    load_unanswerable,
    normalize_answer,
    run_answer_eval,
)
from pipeline.evaluation.datasets import load_corpus
from pipeline.settings import Settings


@pytest.mark.parametrize(
    "prediction,golds,expected",
    [
        ("既定のポートは１１４３４です。[1]", ["11434"], True),  # full-width digits
        ("東京 タワーの高さは333メートル", ["東京タワー"], True),  # spaces ignored
        ("約4GBです。", ["8GB", "16GB"], False),
        ("資料からは分かりません。", [""], False),  # an empty gold never matches
    ],
)
def test_containment_normalizes_width_and_spaces(prediction, golds, expected):
    assert contains_answer(prediction, golds) is expected


def test_char_f1_by_hand():
    # prediction 「東京都」 vs gold 「東京」: common 2, precision 2/3, recall 1 -> F1 0.8
    assert char_f1("東京都", ["東京"]) == pytest.approx(0.8)
    assert char_f1("大阪", ["東京"]) == 0.0
    assert char_f1("東京", ["大阪", "東京"]) == 1.0


def test_normalize_drops_punctuation_and_brackets():
    assert normalize_answer("「ＡＢＣ」、です。") == "abcです"


# ----------------------------------------------------------------- honest refusals


def write_evaldata(folder: Path, corpus: list[dict], queries: list[dict]) -> Path:
    folder.mkdir()
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return folder


# The corpus questions are asked against (answerable set).
NOTES_CORPUS = [
    {"doc_id": "n:ollama", "title": "Ollama", "text": "Ollamaの既定のポートは11434です。モデルは ollama pull で取得する。"},
    {"doc_id": "n:quant", "title": "量子化", "text": "7Bモデルは4bit量子化で約4GBのメモリで動く。"},
    {"doc_id": "n:tsuyu", "title": "梅雨", "text": "梅雨は5月から7月にかけて雨の多い期間のこと。"},
]
NOTES_QUERIES = [
    {"qid": "a1", "question": "Ollamaの既定のポートは？", "answers": ["11434"], "gold_doc_ids": ["n:ollama"]},
    {"qid": "a2", "question": "4bit量子化した7Bモデルのメモリは？", "answers": ["約4GB"], "gold_doc_ids": ["n:quant"]},
]
# Another set's questions: two are answerable from NOTES_CORPUS by accident.
OTHER_CORPUS = [
    {"doc_id": "o:tower", "title": "東京タワー", "text": "東京タワーの高さは333メートルである。"},
    {"doc_id": "o:port", "title": "ポート番号", "text": "HTTPの既定のポートは80で、Ollamaは１１４３４を使う。"},
    {"doc_id": "o:fuji", "title": "富士山", "text": "富士山の標高は3776メートルである。"},
    {"doc_id": "o:tsuyu", "title": "梅雨", "text": "梅雨は東アジアの雨季の一種である。"},
    {"doc_id": "o:biwa", "title": "琵琶湖", "text": "琵琶湖は日本最大の湖である。"},
]
OTHER_QUERIES = [
    {"qid": "u-tower", "question": "東京タワーの高さは？", "answers": ["333メートル"], "gold_doc_ids": ["o:tower"]},
    # The answer, full-width, is in NOTES_CORPUS's Ollama note: dropped.
    {"qid": "u-port", "question": "Ollamaが使うポートは？", "answers": ["「１１４３４」"], "gold_doc_ids": ["o:port"]},
    {"qid": "u-fuji", "question": "富士山の標高は？", "answers": ["3776メートル"], "gold_doc_ids": ["o:fuji"]},
    # The answer is not in NOTES_CORPUS, but its article has the same title as a note: dropped.
    {"qid": "u-tsuyu", "question": "梅雨は何の一種？", "answers": ["雨季"], "gold_doc_ids": ["o:tsuyu"]},
    {"qid": "u-biwa", "question": "日本最大の湖は？", "answers": ["琵琶湖"], "gold_doc_ids": ["o:biwa"]},
]
KEPT = ["u-tower", "u-fuji", "u-biwa"]


def eval_settings(tmp_path: Path, **overrides) -> Settings:
    """The hashing embedder and the word-level checker: no model is loaded."""
    return Settings(index_dir=str(tmp_path / "user-index"), cache_dir=tmp_path / "cache", embed_model="hash:256",
                    chunk_tokens=120, citation_model="cheap", **overrides)


@pytest.fixture
def two_sets(tmp_path):
    return (
        write_evaldata(tmp_path / "notes", NOTES_CORPUS, NOTES_QUERIES),
        write_evaldata(tmp_path / "other", OTHER_CORPUS, OTHER_QUERIES),
    )


def test_borrowed_questions_answerable_from_the_corpus_are_dropped(two_sets):
    notes, other = two_sets
    corpus = load_corpus(notes / "corpus.jsonl")
    borrowed = load_unanswerable(other, corpus)
    assert [q.qid for q in borrowed.queries] == KEPT
    assert (borrowed.dropped_as_answerable, borrowed.candidates) == (2, 5)
    # `limit` picks evenly spaced survivors, the same ones every time.
    assert [q.qid for q in load_unanswerable(other, corpus, limit=2).queries] == KEPT[:2]
    assert load_unanswerable(other, corpus, limit=2) == load_unanswerable(other, corpus, limit=2)


def test_a_refusal_is_saying_unknown_or_being_refused_by_the_policy():
    def answer(raw: str, refused: bool = False):
        return SimpleNamespace(raw_answer=raw, refused=refused)

    assert is_refusal(answer("資料からは分かりません。"))
    assert is_refusal(answer("(抽出モード: LLM を使わず資料の文をそのまま引用しています)\n資料からは分かりません。"))
    assert is_refusal(answer("東京タワーは333メートルです。[1]", refused=True))
    assert not is_refusal(answer("東京タワーは333メートルです。[1]"))


def first_sentence_cited(prompt: str) -> str:
    """A model that answers every question with the first source's first sentence."""
    m = re.search(r'<資料 番号="(\d+)"[^>]*>\n(.*?)</資料>', prompt, re.S)
    body = [line for line in m.group(2).splitlines() if "。" in line][0]
    sentence = body[: body.index("。") + 1]
    return f"根拠: 「{sentence}」[{m.group(1)}]\n回答: {sentence}[{m.group(1)}]"


@pytest.mark.parametrize(
    "handler,expected",
    [(lambda prompt: "回答: 資料からは分かりません。", 1.0), (first_sentence_cited, 0.0)],
    ids=["always-unknown", "quotes-a-source"],
)
def test_refusal_rates_of_answerable_and_borrowed_questions(two_sets, tmp_path, monkeypatch, handler, expected):
    from pipeline.answer.backends.base import FakeBackend

    notes, other = two_sets
    fake = FakeBackend(handler)
    monkeypatch.setattr("pipeline.answer.backends.load_backend", lambda settings, name=None: fake)
    settings = eval_settings(tmp_path, answer_style="quote")  # no answerability gate: the model decides
    report = run_answer_eval(settings, notes, mode="retrieve", limit=None, unanswerable_from=other)
    assert len(fake.prompts) == len(NOTES_QUERIES) + len(KEPT)  # every question was asked
    assert report["n_queries"] == len(NOTES_QUERIES)
    assert report["refusal_rate"] == expected
    assert report["unanswerable"] == {
        "n_queries": len(KEPT), "refused": int(expected * len(KEPT)), "refusal_rate": expected,
        "dropped_as_answerable": 2, "candidates": 5, "source": str(other),
    }
    assert [r["qid"] for r in report["unanswerable_records"]] == KEPT
    assert all(r["refused"] is bool(expected) for r in report["unanswerable_records"] + report["records"])


def test_no_unanswerable_set_unless_asked(two_sets, tmp_path, monkeypatch):
    from pipeline.answer.backends.base import FakeBackend

    notes, _ = two_sets
    fake = FakeBackend(lambda prompt: "回答: 資料からは分かりません。")
    monkeypatch.setattr("pipeline.answer.backends.load_backend", lambda settings, name=None: fake)
    settings = eval_settings(tmp_path)
    report = run_answer_eval(settings, notes, mode="retrieve", limit=1)
    assert (report["unanswerable"], report["unanswerable_records"]) == (None, [])
    assert len(fake.prompts) == 1 and report["refusal_rate"] == 1.0


# What `rag eval answers --json` printed before the unanswerable set: scripts read these keys.
EVAL_ANSWERS_KEYS = {
    "n_docs", "backend", "requested_mode", "index_seconds", "n_queries", "contains", "char_f1", "cited_gold_doc",
    "citation_recall", "citation_precision", "modes", "tokens_read_mean", "seconds_per_question", "records",
}


def test_eval_answers_cli_reports_the_refusal_rate_of_borrowed_questions(two_sets, no_user_config, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    notes, other = two_sets
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash:256")
    monkeypatch.setenv("RAG_CHUNK_TOKENS", "120")
    monkeypatch.setenv("RAG_CITATION_MODEL", "cheap")
    monkeypatch.setenv("RAG_CACHE_DIR", str(no_user_config / "cache"))
    args = ["eval", "answers", str(notes), "--backend", "extractive", "--mode", "retrieve",
            "--unanswerable-from", str(other), "--unanswerable-limit", "2"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert EVAL_ANSWERS_KEYS | {"refusal_rate", "unanswerable", "unanswerable_records"} <= set(data)
    u = data["unanswerable"]
    assert (u["n_queries"], u["dropped_as_answerable"]) == (2, 2)
    assert u["refusal_rate"] == u["refused"] / 2
    assert [r["qid"] for r in data["unanswerable_records"]] == KEPT[:2]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    line = f"答えのない質問 2 問: 「分かりません」と答えた割合 {u['refusal_rate']} (候補 5 問のうち、正解が資料にあるため除外 2 問)"
    assert line in result.stdout


def test_borrowed_questions_are_refused_before_generation_in_the_short_style(two_sets, tmp_path, monkeypatch):
    """A model that always invents an answer: the answerability gate still refuses the borrowed questions."""
    from pipeline.answer.backends.base import FakeBackend

    notes, other = two_sets
    fake = FakeBackend(lambda prompt: " それは東京タワーです。[1]")
    monkeypatch.setattr("pipeline.answer.backends.load_backend", lambda settings, name=None: fake)
    report = run_answer_eval(eval_settings(tmp_path), notes, mode="retrieve", limit=None, unanswerable_from=other)
    assert report["unanswerable"]["refusal_rate"] == 1.0
    assert len(fake.prompts) == len(NOTES_QUERIES)  # only the answerable questions reached the model


def test_docs_keeps_a_small_corpus_and_only_its_questions(tmp_path):
    from pipeline.evaluation.datasets import load_retrieval_dataset

    notes = write_evaldata(tmp_path / "notes", NOTES_CORPUS, NOTES_QUERIES)
    whole = load_retrieval_dataset(notes)
    small = load_retrieval_dataset(notes, docs=2)  # spread: the 1st and 2nd of 3
    assert [d.doc_id for d in small.corpus] == ["n:ollama", "n:quant"]
    assert [q.qid for q in small.queries] == ["a1", "a2"]
    assert small.corpus_sha256 != whole.corpus_sha256  # its own evaluation index
    one = load_retrieval_dataset(notes, docs=1)
    assert [q.qid for q in one.queries] == ["a1"] and one.name.endswith("-docs1")


def test_citation_markers_are_not_answer_text():
    assert not contains_answer("答えは3です。[2]", ["2"])
    assert contains_answer("答えは3です。[2]", ["3"])
    assert char_f1("11434です。[1]", ["11434"]) == char_f1("11434です。", ["11434"])
