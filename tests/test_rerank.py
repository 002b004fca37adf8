"""The reranker: the seam (what is reranked, what is kept), answers use it, a missing model falls
back to the fused order with a warning, the evaluation's article split, and, slow, the shipped
cross-encoder on hand-made Japanese passages, `rag search --rerank`, and a corrupted artifact."""

from __future__ import annotations

import logging
import shutil

import pytest

from pipeline.answer.backends.base import FakeBackend
from pipeline.answer.engine import Answerer, answer_reranker
from pipeline.documents import Chunk, ScoredChunk
from pipeline.errors import ModelUnavailable
from pipeline.index.rerank import reranked
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import DEMO, hash_settings, run_main


def _chunk(i: int, text: str = "", title: str = "") -> ScoredChunk:
    text = text or f"チャンク{i}"
    return ScoredChunk(Chunk(f"c{i}", f"note{i}.md", text, 0, len(text), 1, 1, title=title), 1.0 / (i + 1))


class Reverse:
    """Reverses what it is given and records what it saw."""

    def __init__(self):
        self.seen: list[list[str]] = []

    def rerank(self, query, chunks):
        self.seen.append([c.chunk.id for c in chunks])
        return list(reversed(chunks))


def make_reverse(settings):
    return Reverse()


def make_unavailable(settings):
    raise ModelUnavailable("再順位付けモデルを読み込めません: /x/weights.safetensors")


def test_only_the_candidates_are_reranked_and_the_rest_keep_their_order():
    pool = [_chunk(i) for i in range(6)]
    r = Reverse()
    out = reranked(r, "質問", pool, k=5, candidates=3)
    assert r.seen == [["c0", "c1", "c2"]]
    assert [c.chunk.id for c in out] == ["c2", "c1", "c0", "c3", "c4"]


def test_answers_rest_on_the_reranked_candidates(tmp_path, notes):
    settings = hash_settings(tmp_path / "idx", top_k=1, reranker_candidates=3)
    Ingestor(settings, tmp_path / "idx").run([notes])
    index = open_index(settings)
    reverse = Reverse()
    answerer = Answerer(settings, index, FakeBackend(lambda p: "わかりません。"), reranker=reverse)
    retrieval = answerer._retrieve("Ollamaの既定のポートは？")
    assert len(reverse.seen) == 1 and len(reverse.seen[0]) == 3  # the fused top 3 went to the reranker
    assert [h.chunk.id for h in retrieval.hits] == [reverse.seen[0][-1]]  # its first is what the answer reads
    plain = Answerer(settings, index, FakeBackend(lambda p: "わかりません。"))
    assert [h.chunk.id for h in plain._retrieve("Ollamaの既定のポートは？").hits] == [reverse.seen[0][0]]
    # `rag ask --json` says what re-ordered the candidates, and that nothing did without a reranker
    assert answerer.ask("Ollamaの既定のポートは？", mode="retrieve").to_dict()["reranker"] == settings.reranker
    assert plain.ask("Ollamaの既定のポートは？", mode="retrieve").to_dict()["reranker"] is None


def test_the_reranker_setting_and_switch(tmp_path, caplog):
    settings = hash_settings(tmp_path / "idx", reranker="tests.test_rerank:make_reverse", rerank=True)
    assert type(answer_reranker(settings)).__name__ == "Reverse"
    assert answer_reranker(settings.model_copy(update={"rerank": False})) is None
    broken = settings.model_copy(update={"reranker": "tests.test_rerank:make_unavailable"})
    with caplog.at_level(logging.WARNING):
        assert answer_reranker(broken) is None  # answers go on, on the fused order
    assert "再順位付け" in caplog.text and "weights.safetensors" in caplog.text


def test_the_default_reranker_is_the_shipped_cross_encoder():
    from pipeline.settings import Settings

    # off for answers until it beats the fused order on held-out articles (benchmarks/results/rerank.md)
    assert Settings().reranker == "pipeline.answer.rerank:cross_encoder" and Settings().rerank is False


def test_evaluation_splits_keep_an_article_on_one_side():
    from pipeline.evaluation.datasets import Query
    from pipeline.evaluation.relevance_data import query_groups, split_qids

    paragraphs = [Query(f"a{a}p{p}q", "問", ("答",), (f"jsquad:a{a}p{p}",), {"article_id": f"jsquad:a{a}"})
                  for a in range(60) for p in range(3)]
    articles = [Query(f"a{a}p{p}q", "問", ("答",), (f"jsquad:a{a}",), {"paragraph_doc_id": f"jsquad:a{a}p{p}"})
                for a in range(60) for p in range(3)]
    assert query_groups(paragraphs) == query_groups(articles)  # the same article, whichever corpus
    held, val, train = (split_qids(paragraphs, s) for s in ("heldout", "val", "train"))
    assert held and val and train and not (held & val) and not (held & train)
    assert held | val | train == {q.qid for q in paragraphs}
    for a in range(60):  # all of an article's questions on one side
        ids = {f"a{a}p{p}q" for p in range(3)}
        assert sum(bool(ids & s) for s in (held, val, train)) == 1
    hops = [Query("q1", "問", ("答",), ("e1", "e2")), Query("q2", "問", ("答",), ("e2", "e3")),
            Query("q3", "問", ("答",), ("e9",))]
    g = query_groups(hops)
    assert g["q1"] == g["q2"] != g["q3"]  # questions sharing a card are one group


# --------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def shipped():
    from pipeline.answer.rerank import cross_encoder
    from pipeline.check.entailment.artifact import CONFIG_FILE, REBUILD_RERANKER, RERANKER_DIR
    from pipeline.settings import load_settings

    if not (RERANKER_DIR / CONFIG_FILE).exists():
        pytest.skip(f"the reranker has not been trained yet: run `{REBUILD_RERANKER}`")
    return cross_encoder(load_settings())


PASSAGES = [
    ("富士山", "富士山は静岡県と山梨県にまたがる活火山で、標高は3776メートルである。"),
    ("富士山", "富士山は古くから信仰の対象とされ、多くの和歌や絵画に描かれてきた。"),
    ("琵琶湖", "琵琶湖は滋賀県にある日本最大の湖で、面積は約670平方キロメートルである。"),
    ("Ollama", "Ollamaはローカルで言語モデルを動かすツールで、既定ではポート11434で待ち受ける。"),
]


@pytest.mark.slow
@pytest.mark.parametrize("question,best", [
    ("富士山の標高は何メートルですか？", 0),
    ("日本で一番大きい湖はどこにありますか？", 2),
    ("Ollamaは既定でどのポートを使いますか？", 3),
])
def test_the_shipped_reranker_puts_the_answering_passage_first(shipped, question, best):
    pool = [_chunk(i, text, title) for i, (title, text) in enumerate(PASSAGES)]
    probs = shipped.scores(question, pool)
    assert max(range(len(pool)), key=probs.__getitem__) == best  # the model alone prefers it
    # handed over second, after a passage that does not answer: the reranker lifts it over the fused order
    others = [c for i, c in enumerate(pool) if i != best]
    out = shipped.rerank(question, [others[0], pool[best], *others[1:]])
    assert out[0].chunk.id == f"c{best}"
    assert 0.0 <= min(c.score for c in out) and max(c.score for c in out) <= 1.0


@pytest.mark.slow
def test_rag_search_rerank_on_the_demo_notes(shipped, tmp_path, monkeypatch, capsys, no_user_config):
    index = tmp_path / "demo-index"
    code, _, err = run_main(monkeypatch, capsys, "ingest", str(DEMO), "--index", str(index), "--quiet", "--no-prefix")
    assert code == 0, err
    code, out, err = run_main(monkeypatch, capsys, "search", "Ollamaの既定のポート番号は？", "-k", "2",
                              "--index", str(index), "--rerank", "--json")
    assert code == 0, err
    import json

    hits = json.loads(out)
    assert len(hits) == 2 and "11434" in hits[0]["text"]


@pytest.mark.slow
def test_a_corrupted_reranker_names_the_file_and_the_rebuild_command(shipped, tmp_path):
    from pipeline.answer.rerank import cross_encoder
    from pipeline.check.entailment.artifact import REBUILD_RERANKER, RERANKER_DIR, WEIGHTS_FILE
    from pipeline.settings import load_settings

    folder = tmp_path / "reranker"
    shutil.copytree(RERANKER_DIR, folder)
    weights = folder / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelUnavailable) as err:
        cross_encoder(load_settings(), folder)
    assert str(weights) in str(err.value) and "sha256" in str(err.value) and REBUILD_RERANKER in str(err.value)
    assert err.value.exit_code == 6
    with pytest.raises(ModelUnavailable, match="relevance") as err:  # the checker's model is not a reranker
        cross_encoder(load_settings(), RERANKER_DIR.parents[1] / "check" / "entailment")
    assert REBUILD_RERANKER in str(err.value)


@pytest.mark.slow
def test_the_checker_and_the_reranker_share_one_copy_of_the_base_model(shipped):
    from pipeline.check.entailment import EntailmentModel
    from pipeline.settings import load_settings

    checker = EntailmentModel.load(load_settings())
    assert checker.network.embeddings is shipped.model.network.embeddings
    assert checker.network.layers[0] is shipped.model.network.layers[0]
    assert checker.network.layers[-1] is not shipped.model.network.layers[-1]  # their own top layers
    pair = [("会議は月曜日に開かれた。", "会議は月曜日に開かれた。")]
    assert checker.score(pair)[0] > checker.threshold
