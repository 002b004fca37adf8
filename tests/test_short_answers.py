"""Retrieve mode for a small model: selected evidence in, a short cited answer out, and the
extractive fallback when the checker cannot find the model's answer in its source."""

import pytest

from pipeline.answer.backends.base import FakeBackend
from pipeline.answer.engine import FALLBACK_LABEL, REFUSAL_LABEL, Answerer
from pipeline.answer.evidence import select_evidence
from pipeline.answer.prompts import SHORT_PREFILL, SHORT_SYSTEM, UNKNOWN
from pipeline.check import CitationChecker
from pipeline.check.citations import claim_text
from pipeline.documents import Chunk
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from pipeline.japanese import default_analyzer
from pipeline.tokens import estimate_tokens
from tests.conftest import hash_settings

ARTICLE = (
    "# 富士山\n\n"
    "富士山は静岡県と山梨県にまたがる活火山である。\n"
    "標高は3776メートルで、日本で最も高い山である。\n"
    "古くから信仰の対象とされ、多くの和歌に詠まれた。\n"
    "2013年に世界文化遺産に登録された。\n"
    "山頂には八つの峰があり、お鉢巡りと呼ばれる。\n"
    "夏の登山シーズンには多くの登山者が訪れる。\n"
    "冬は雪に覆われ、遠くからも白い姿が見える。\n"
)


def chunk_of(text: str, path: str = "/notes/fuji.md", start: int = 0, line_start: int = 1) -> Chunk:
    return Chunk(id=f"{path}:{start}", path=path, text=text, start=start, end=start + len(text),
                 line_start=line_start, line_end=line_start + text.count("\n"), title="富士山")


def test_evidence_keeps_the_answer_sentence_verbatim_with_its_lines():
    doc = "前書き\n" + ARTICLE
    chunk = chunk_of(ARTICLE, start=4, line_start=2)  # the chunk starts on the document's line 2
    sources = select_evidence("富士山が世界文化遺産に登録されたのは何年？", [chunk], default_analyzer(),
                              estimate_tokens, budget_tokens=60, seeds=1)
    text = "".join(s.chunk.text for s in sources)
    assert "2013年に世界文化遺産に登録された。" in text
    assert "夏の登山" not in text and "冬は雪" not in text  # beyond the neighbours: left out
    for s in sources:
        c = s.chunk
        assert doc[c.start:c.end] == c.text  # a verbatim slice of the document
        assert doc.count("\n", 0, c.start) + 1 == c.line_start
        assert doc.count("\n", 0, c.end - 1) + 1 == c.line_end
    assert [s.number for s in sources] == list(range(1, len(sources) + 1))


def test_evidence_reads_far_less_than_the_chunks_and_keeps_a_neighbour():
    other = chunk_of("# 浅間山\n\n浅間山は長野県と群馬県の境にある。\n1783年に大噴火した。\n", path="/notes/asama.md")
    sources = select_evidence("富士山の標高は何メートル？", [chunk_of(ARTICLE), other], default_analyzer(), estimate_tokens,
                              budget_tokens=80, seeds=1)
    text = "".join(s.chunk.text for s in sources)
    assert "標高は3776メートル" in text
    assert "活火山" in text  # the sentence before: the subject 富士山 sits there
    assert estimate_tokens(text) < estimate_tokens(ARTICLE) / 2
    assert all(s.chunk.path == "/notes/fuji.md" for s in sources)


def test_without_shared_words_the_best_chunk_is_still_shown():
    sources = select_evidence("量子コンピュータとは？", [chunk_of(ARTICLE)], default_analyzer(), estimate_tokens)
    assert len(sources) == 1 and sources[0].chunk.text.startswith("# 富士山")


@pytest.fixture
def fuji_index(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "fuji.md").write_text(ARTICLE, "utf-8")
    (notes / "asama.md").write_text("# 浅間山\n\n浅間山は長野県と群馬県の境にある活火山である。\n1783年に大噴火した。\n", "utf-8")
    settings = hash_settings(tmp_path / "idx", top_k=2)
    Ingestor(settings, tmp_path / "idx").run([notes])
    return settings, open_index(settings)


def number_of(prompt: str, needle: str) -> int:
    import re

    for m in re.finditer(r'<資料 番号="(\d+)"[^>]*>\n(.*?)\n</資料>', prompt, re.S):
        if needle in m.group(2):
            return int(m.group(1))
    raise AssertionError(f"{needle} not in the prompt")


@pytest.fixture(scope="module")
def checker():
    """The checker `rag ask` uses: the entailment model trained here."""
    from pipeline.settings import Settings

    return CitationChecker.from_settings(Settings(citation_model="entailment"))


def answerer(settings, index, checker, handler, **overrides):
    settings = settings.model_copy(update=overrides) if overrides else settings
    return Answerer(settings, index, FakeBackend(handler), checker)


def test_the_model_reads_instructions_then_evidence_and_writes_one_line(fuji_index, checker):
    settings, index = fuji_index

    def handler(prompt):
        assert prompt.endswith(SHORT_PREFILL)
        return f" 標高は3776メートルです。[{number_of(prompt, '3776')}]\n根拠: 長い引用がここに続く"

    a = answerer(settings, index, checker, handler)
    answer = a.ask("富士山の標高は何メートル？", mode="retrieve")
    prompt = a.backend.prompts[0]
    assert prompt.startswith(SHORT_SYSTEM)  # the same instructions first, for every question
    assert "お鉢巡り" not in prompt  # the model reads evidence, not the whole note
    assert answer.raw_answer == f"標高は3776メートルです。[{number_of(prompt, '3776')}]"  # one line, no quote
    assert "標高は3776メートル" in answer.evidence and answer.evidence.startswith("「")  # quoted by the program
    assert answer.checked.verdicts[0].label == "supported" and answer.replaced_answer is None
    assert answer.citation_precision == 1.0
    assert answer.short_answer == "3776メートル"  # what the sentence adds to the question, put first
    assert answer.to_dict()["short_answer"] == "3776メートル"


def test_an_answer_the_source_contradicts_falls_back_to_the_source_sentence(fuji_index, checker):
    settings, index = fuji_index

    def wrong(prompt):
        return f" 標高は3000メートルです。[{number_of(prompt, '3776')}]"

    answer = answerer(settings, index, checker, wrong).ask("富士山の標高は何メートル？", mode="retrieve")
    assert answer.replaced_answer is not None and "3000" in answer.replaced_answer
    assert "標高は3776メートルで、日本で最も高い山である。" in answer.answer
    assert answer.label == FALLBACK_LABEL.format(answer=claim_text(answer.replaced_answer))
    assert answer.answer.startswith(answer.label)  # the user is told the model's answer was replaced
    assert "[" not in answer.label  # the model's citation is not repeated inside the label
    assert answer.checked.verdicts[0].label == "supported"
    assert answer.to_dict()["replaced_answer"] == answer.replaced_answer
    assert answer.short_answer is not None and "3776" in answer.short_answer  # from the source sentence shown
    assert "富士山" not in answer.short_answer

    kept = answerer(settings, index, checker, wrong, extractive_fallback=False).ask("富士山の標高は何メートル？", mode="retrieve")
    assert kept.replaced_answer is None and "3000" in kept.answer
    assert kept.checked.verdicts[0].label == "unsupported"


def test_an_unknown_answer_is_left_as_it_is(fuji_index, checker):
    settings, index = fuji_index
    a = answerer(settings, index, checker, lambda p: f" {UNKNOWN}。")
    answer = a.ask("富士山の標高は何メートル？", mode="retrieve")
    assert a.backend.prompts  # the gate let it through: the model itself said it does not know
    assert UNKNOWN in answer.answer and answer.replaced_answer is None and answer.checked is None
    assert answer.short_answer is None


def test_an_answer_after_a_line_break_is_kept(fuji_index, checker):
    settings, index = fuji_index
    a = answerer(settings, index, checker, lambda p: f"\n標高は3776メートルです。[{number_of(p, '3776')}]\n根拠: …")
    answer = a.ask("富士山の標高は何メートル？", mode="retrieve")
    assert answer.raw_answer.startswith("標高は3776メートルです。")


def test_the_quote_is_the_sentence_the_answer_is_cited_for(fuji_index, checker):
    settings, index = fuji_index
    a = answerer(settings, index, checker, lambda p: f" 2013年に世界文化遺産に登録された。[{number_of(p, '2013年')}]")
    answer = a.ask("富士山が世界文化遺産に登録されたのは何年？", mode="retrieve")
    n = answer.checked.verdicts[0].cited[0]
    assert answer.evidence == f"「2013年に世界文化遺産に登録された。」[{n}]"


def test_a_name_only_in_the_title_counts_as_mentioned(tmp_path, checker):
    notes = tmp_path / "notes"
    notes.mkdir()
    # The excerpt about the height does not name the mountain: its title does.
    (notes / "fuji.md").write_text("---\ntitle: 富士山\n---\n標高は3776メートルである。\n山頂には八つの峰がある。\n", "utf-8")
    settings = hash_settings(tmp_path / "idx", top_k=1)
    Ingestor(settings, tmp_path / "idx").run([notes])
    index = open_index(settings)
    a = answerer(settings, index, checker, lambda p: f" 富士山の標高は3776メートルです。[{number_of(p, '3776')}]")
    answer = a.ask("富士山の標高は？", mode="retrieve")
    assert a.backend.prompts and answer.replaced_answer is None
    assert "3776" in answer.answer


def test_auto_mode_does_not_retry_with_the_whole_corpus_when_no_note_mentions_the_question(fuji_index, checker):
    settings, index = fuji_index
    a = answerer(settings, index, checker, lambda p: " アラン・ロベールです。[1]")
    answer = a.ask("アラン・ロベールのニックネームは何ですか？", mode="auto")
    assert a.backend.prompts == [] and answer.fallback_from is None
    assert UNKNOWN in answer.answer and "アラン" in answer.answer  # the reason is shown with the refusal


def test_quote_style_still_sends_whole_chunks(fuji_index, checker):
    settings, index = fuji_index

    def handler(prompt):
        n = number_of(prompt, "3776")
        return f" 「標高は3776メートル」[{n}]\n回答: 標高は3776メートルです。[{n}]"

    a = answerer(settings, index, checker, handler, answer_style="quote")
    answer = a.ask("富士山の標高は何メートル？", mode="retrieve")
    assert "お鉢巡り" in a.backend.prompts[0] and "3776" in answer.answer


def test_a_question_the_evidence_does_not_mention_is_refused_without_generating(fuji_index, checker):
    settings, index = fuji_index
    a = answerer(settings, index, checker, lambda p: " アラン・ロベールです。[1]")
    answer = a.ask("アラン・ロベールのニックネームは何ですか？", mode="retrieve")
    assert a.backend.prompts == []  # no generation spent
    assert UNKNOWN in answer.answer and answer.checked is None
    assert any(r.startswith("回答しない:") and "アラン" in r for r in answer.route.reasons)


def test_an_invented_name_is_not_shown_as_the_answer(fuji_index, checker):
    settings, index = fuji_index
    question = "富士山の山頂の峰は何と呼ばれる？"

    def invents(prompt):
        return f" 富士山の山頂の峰はガギャンと呼ばれる。[{number_of(prompt, 'お鉢巡り')}]"

    answer = answerer(settings, index, checker, invents).ask(question, mode="retrieve")
    assert "ガギャン" not in answer.raw_answer and "ガギャン" in answer.replaced_answer
    assert "お鉢巡り" in answer.answer  # the source sentence that answers, labelled
    assert answer.answer.startswith(FALLBACK_LABEL.format(answer=claim_text(answer.replaced_answer)))


def test_an_invented_answer_with_no_source_sentence_to_show_becomes_a_refusal(fuji_index, checker):
    settings, index = fuji_index
    question = "富士山の山頂の峰の呼び名は？"  # 呼び名: no source sentence shares half the question's words

    def invents(prompt):
        return f" 富士山の山頂の峰の呼び名はガギャンです。[{number_of(prompt, 'お鉢巡り')}]"

    answer = answerer(settings, index, checker, invents).ask(question, mode="retrieve")
    assert answer.raw_answer == f"{UNKNOWN}。" and "ガギャン" in answer.replaced_answer
    assert answer.answer.startswith(REFUSAL_LABEL.format(answer=claim_text(answer.replaced_answer)))


def test_an_answer_that_joins_two_sources_is_kept_and_flagged_not_replaced(fuji_index, checker):
    """Multi-hop: no single cited span entails 「富士山です」, yet nothing in it is invented."""
    settings, index = fuji_index
    a = answerer(settings, index, checker, lambda p: f" 富士山です。[{number_of(p, '3776')}]")
    answer = a.ask("富士山と浅間山、標高が高いのはどちら？", mode="retrieve")
    assert a.backend.prompts and answer.replaced_answer is None
    assert answer.raw_answer.startswith("富士山です。")


def test_the_extractive_backend_refuses_what_its_sources_do_not_mention(fuji_index, checker):
    from pipeline.answer.backends.extractive import ExtractiveBackend

    settings, index = fuji_index
    a = Answerer(settings, index, ExtractiveBackend(settings), checker)
    refused = a.ask("アラン・ロベールが登った山は？", mode="retrieve")
    assert refused.raw_answer == f"{UNKNOWN}。" and "アラン" in refused.answer
    answered = a.ask("富士山の標高は何メートル？", mode="retrieve")
    assert "3776メートル" in answered.raw_answer


def test_a_word_neither_the_sources_nor_the_question_have_is_not_shown_as_the_answer(fuji_index, checker):
    """A 1.5B model's corrupted copy (「接手」 for 「措置」, Chinese 「步兵」): the source sentence is shown instead."""
    settings, index = fuji_index
    a = answerer(settings, index, checker, lambda p: f" 2013年に世界遺产に登録された。[{number_of(p, '2013年')}]")
    answer = a.ask("富士山が世界文化遺産に登録されたのは何年？", mode="retrieve")
    assert "遺产" in answer.replaced_answer
    assert answer.raw_answer.startswith("2013年に世界文化遺産に登録された。")
