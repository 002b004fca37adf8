"""Answers with `[n]` citations: split into sentences, parse the markers, map them to spans.

The LLM sees its sources numbered ``[1] … [n]`` (`pipeline.documents.Source`)
and writes an answer whose sentences end with markers such as ``[1]``, ``[1,3]``,
``[1][2]``, ``［２］`` or ``【1-3】``. `parse_answer` splits the answer into sentences with the
Japanese-aware splitter (`pipeline.japanese.split_sentences`) and attaches
each marker to the sentence it closes, also when the model puts it after the
full stop (``…です。[1]``). The markers stay in `AnswerSentence.text`;
`claim_text` is the sentence without them, which is what gets checked.

Everything here is a pure function of strings and `Chunk` values::

    >>> [(s.text, s.citations) for s in parse_answer("7Bです[1]。13Bもある。[2][3]")]
    [('7Bです[1]。', (1,)), ('13Bもある。[2][3]', (2, 3))]
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pipeline.documents import Chunk, Span
from pipeline.japanese import split_sentences

__all__ = [
    "AnswerSentence",
    "CITATION_MARKER",
    "claim_text",
    "has_claim",
    "parse_answer",
    "parse_citation_numbers",
    "sentence_spans",
    "source_sentences",
    "span_in_chunk",
]


@dataclass(frozen=True)
class AnswerSentence:
    """One sentence of an answer: `answer[start:end] == text`, markers included."""

    text: str
    start: int
    end: int
    citations: tuple[int, ...]  # source numbers, in the order written, no duplicates


_D = "[0-9０-９]+"
_SEP = r"\s*[,，、;；]\s*"
_RANGE = rf"{_D}(?:\s*[-‐–~〜～ー]\s*{_D})?"
# [1] [1,3] [1, 3] [1-3] ［２］ 【1】 [1、2]; also [^1] footnotes.
CITATION_MARKER = re.compile(rf"[\[［【]\s*\^?\s*({_RANGE}(?:{_SEP}{_RANGE})*)\s*[\]］】]")
# Markers, spaces and closing punctuation that may follow a sentence's full stop.
_LEADING_MARKERS = re.compile(rf"(?:\s*{CITATION_MARKER.pattern})+[。．.]?")


def parse_citation_numbers(inner: str) -> tuple[int, ...]:
    """``"1, 3-5"`` -> (1, 3, 4, 5); full-width digits allowed."""
    out: list[int] = []
    for part in re.split(_SEP, unicodedata.normalize("NFKC", inner).strip()):
        m = re.fullmatch(r"(\d+)\s*(?:[-‐–~〜～ー]\s*(\d+))?", part.strip())
        if not m:
            continue
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a or b - a > 50:
            b = a
        out.extend(range(a, b + 1))
    return tuple(out)


def _citations_in(text: str) -> tuple[int, ...]:
    seen: dict[int, None] = {}
    for m in CITATION_MARKER.finditer(text):
        for n in parse_citation_numbers(m.group(1)):
            seen.setdefault(n, None)
    return tuple(seen)


def claim_text(text: str) -> str:
    """The sentence without its citation markers (what the checker tests)."""
    return CITATION_MARKER.sub("", text).strip()


_HEADING = re.compile(r"^\s*(?:#{1,6}\s|\*+\s)")
_ABSTAIN = re.compile(
    r"(資料|文書|ソース|出典|情報|記載|記述|コンテキスト|参考文献).{0,20}"
    r"(ありません|見つかりません|見当たりません|わかりません|分かりません|裏付けられません|不明です|含まれていません)"
)


def has_claim(text: str) -> bool:
    """False for sentences that assert nothing checkable: headings, abstentions, lone markers.

    A sentence has a claim when, without markers, it has at least two letters
    or digits (kana, kanji, Latin) and is not a Markdown/org heading nor an
    abstention such as 「資料には記載がありません。」.
    """
    t = claim_text(text)
    if _HEADING.match(t) or _ABSTAIN.search(t):
        return False
    letters = sum(1 for c in t if c.isalnum())
    return letters >= 2


def parse_answer(answer: str) -> list[AnswerSentence]:
    """Split `answer` into sentences and attach the `[n]` markers to the sentence they close.

    Markers written right after a sentence's full stop (``…です。[1]``, or on a
    line of their own) belong to the sentence before them. A marker inside a
    sentence (``AはB[1]で、CはD[2]です。``) cites for the whole sentence.
    """
    spans = split_sentences(answer)
    fixed: list[list[int]] = []
    for s, e in spans:
        m = _LEADING_MARKERS.match(answer, s)
        if m and fixed and m.end() > s:
            lead_end = m.end()
            fixed[-1][1] = lead_end
            # What remains of this sentence after its leading markers.
            rest = lead_end
            while rest < e and answer[rest].isspace():
                rest += 1
            if rest >= e:
                continue
            s = rest
        fixed.append([s, e])
    out: list[AnswerSentence] = []
    for s, e in fixed:
        text = answer[s:e]
        out.append(AnswerSentence(text, s, e, _citations_in(text)))
    return out


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentence spans of a source text; a text the splitter finds no sentence in is one sentence."""
    spans = split_sentences(text)
    return spans or ([(0, len(text))] if text.strip() else [])


def source_sentences(chunk: Chunk) -> list[tuple[int, int]]:
    """Sentence spans inside `chunk.text` (offsets relative to the chunk)."""
    return sentence_spans(chunk.text)


def span_in_chunk(chunk: Chunk, start: int, end: int) -> Span:
    """The document `Span` of `chunk.text[start:end]` (path, characters, lines)."""
    line_a = chunk.line_start + chunk.text.count("\n", 0, start)
    line_b = line_a + chunk.text.count("\n", start, max(start, end - 1))
    return Span(chunk.path, chunk.start + start, chunk.start + end, (line_a, line_b))
