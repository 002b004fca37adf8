"""Answer parsing ([n] markers, Japanese sentences, spans) and number normalization."""

import pytest

from pipeline.check.citations import (
    claim_text,
    has_claim,
    parse_answer,
    parse_citation_numbers,
    source_sentences,
    span_in_chunk,
)
from pipeline.check.numbers import extract_quantities, kanji_to_number, quantities_match, unmatched_quantities
from pipeline.documents import Chunk, Source

PARSE_TESTS = [
    # answer, [(sentence text, citations)]
    ("7Bです[1]。13Bもある。[2][3]", [("7Bです[1]。", (1,)), ("13Bもある。[2][3]", (2, 3))]),
    ("Ollamaの既定のポートは11434です。[1]\nモデルは ollama pull で取得します[2]。",
     [("Ollamaの既定のポートは11434です。[1]", (1,)), ("モデルは ollama pull で取得します[2]。", (2,))]),
    ("AはB[1]で、CはD［２］です。次の文【1-3】。最後[1, 4]。",
     [("AはB[1]で、CはD［２］です。", (1, 2)), ("次の文【1-3】。", (1, 2, 3)), ("最後[1, 4]。", (1, 4))]),
    ("彼は「行こう。」と言った[1]。", [("彼は「行こう。」と言った[1]。", (1,))]),
    ("- 箇条書き [1]\n- 二つ目。[2]", [("- 箇条書き [1]", (1,)), ("- 二つ目。[2]", (2,))]),
    ("出典のない文。", [("出典のない文。", ())]),
    ("重複[1][1]。", [("重複[1][1]。", (1,))]),
    ("文です。\n[2]", [("文です。\n[2]", (2,))]),
]


@pytest.mark.parametrize("answer,expected", PARSE_TESTS)
def test_answer_is_split_into_sentences_with_their_citations(answer, expected):
    got = parse_answer(answer)
    assert [(s.text, s.citations) for s in got] == expected
    for s in got:
        assert answer[s.start:s.end] == s.text


@pytest.mark.parametrize("inner,numbers", [("1", (1,)), ("1,3", (1, 3)), ("1、 3", (1, 3)), ("２-４", (2, 3, 4)), ("1 ,2", (1, 2))])
def test_citation_numbers_accept_lists_ranges_and_full_width(inner, numbers):
    assert parse_citation_numbers(inner) == numbers


def test_markers_are_excluded_from_the_checked_claim():
    assert claim_text("7Bモデルは4GBで動く[1][2]。") == "7Bモデルは4GBで動く。"


@pytest.mark.parametrize("text,expected", [
    ("## まとめ", False),
    ("資料には記載がありません。", False),
    ("[1]", False),
    ("Ollamaのポートは11434です[1]。", True),
])
def test_headings_abstentions_and_lone_markers_assert_nothing(text, expected):
    assert has_claim(text) is expected


def test_span_in_chunk_points_back_into_the_document():
    doc = "# Ollama\n\nOllamaの既定のポートは11434です。\nモデルは ollama pull で取得する。\n"
    start = doc.index("Ollamaの")
    chunk = Chunk("c1", "/notes/ollama.md", doc[start:], start, len(doc), 3, 4)
    spans = source_sentences(chunk)
    assert [chunk.text[s:e] for s, e in spans] == ["Ollamaの既定のポートは11434です。", "モデルは ollama pull で取得する。"]
    sp = span_in_chunk(chunk, *spans[1])
    assert doc[sp.start:sp.end] == "モデルは ollama pull で取得する。"
    assert sp.lines == (4, 4) and sp.path == "/notes/ollama.md"
    assert Source(1, chunk).number == 1


# ---------------------------------------------------------------- numbers

SAME_QUANTITY = [
    ("7B", "70億"),
    ("7B", "7,000,000,000"),
    ("７Ｂ", "7b"),
    ("三十人", "30人"),
    ("二千二十五年", "2025年"),
    ("二〇二五年", "2025年"),
    ("50%", "５０％"),
    ("50パーセント", "5割"),
    ("3億5000万円", "350,000,000円"),
    ("四つ", "４個"),
    ("二匹", "2頭"),
    ("令和7年", "2025年"),
    ("平成元年", "1989年"),
    ("1.5万", "15000"),
]


@pytest.mark.parametrize("a,b", SAME_QUANTITY)
def test_equal_quantities_match_across_notations(a, b):
    (qa,), (qb,) = extract_quantities(a), extract_quantities(b)
    assert quantities_match(qa, qb), (qa, qb)


@pytest.mark.parametrize("a,b", [("7B", "13B"), ("3年", "3月"), ("4GB", "4B"), ("2025年", "2024年"), ("5km", "5kg")])
def test_different_quantities_do_not_match(a, b):
    (qa,), (qb,) = extract_quantities(a), extract_quantities(b)
    assert not quantities_match(qa, qb)


def test_dates_in_any_notation_give_the_same_fields():
    want = [(2025.0, "年"), (4.0, "月"), (26.0, "日")]
    for t in ("2025年4月26日", "2025-04-26", "2025/4/26", "25/04/26", "令和7年4月26日"):
        assert [(q.value, q.unit) for q in extract_quantities(t)] == want, t


def test_org_timestamp_gives_date_and_time():
    got = [(q.value, q.unit) for q in extract_quantities("<2025-03-11 Tue 08:28>")]
    assert got == [(2025.0, "年"), (3.0, "月"), (11.0, "日"), (8.0, "時"), (28.0, "分")]


@pytest.mark.parametrize("text", ["一緒に一部を見た", "千葉県と三重県", "統一された", "十分な量", "一般的に"])
def test_words_made_of_kanji_numerals_are_not_numbers(text):
    assert extract_quantities(text) == []


def test_gb_is_a_unit_not_a_billion():
    (q,) = extract_quantities("約4GBのメモリ")
    assert (q.value, q.unit) == (4.0, "gb")


def test_model_names_keep_their_size():
    assert [q.value for q in extract_quantities("Qwen2.5-Coder-1.5B")] == [1.5e9]


def test_kanji_numerals():
    assert kanji_to_number("三十") == 30
    assert kanji_to_number("二千二十五") == 2025
    assert kanji_to_number("三億五千万") == 350_000_000
    assert kanji_to_number("百") == 100


def test_unmatched_quantities_lists_what_the_source_lacks():
    claim = extract_quantities("13Bモデルは4GBで動く")
    src = extract_quantities("7Bモデルは4bit量子化で約4GBのメモリで動く")
    assert [q.surface for q in unmatched_quantities(claim, src)] == ["13B"]
