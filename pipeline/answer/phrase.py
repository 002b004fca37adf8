"""The answer phrase: an answer sentence without the words it repeats from the question.

A 1.5B model answers 「日本共産党の第20回党大会が開催されたのは西暦何年か？」 with
「日本共産党の第20回党大会が開催されたのは1994年です。[2]」: right, but the answer a
person looks for is 「1994年」. The sentence stays what is checked and cited; the phrase is
what is put first.

Only the edges are cut, never the middle: a run of two or more morphemes that the
question also has (its restatement), and particles, auxiliaries, punctuation and light
verbs (です, がある) around it. A question-word run glued to the answer noun stays with it
(何派遣団 → 「…安定化派遣団」, 何m → 「618m」). When nothing of the sentence is new, it is
shown whole: a sentence that only restates the question has no phrase to offer.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from pipeline.check.citations import claim_text
from pipeline.japanese import CLOSE_TO_OPEN, OPEN_TO_CLOSE, STOP_LEMMAS

if TYPE_CHECKING:
    from pipeline.japanese import Analyzer, Morpheme

__all__ = ["answer_phrase"]

# A restatement is a run of at least this many morphemes the question has too; a single
# shared word (日本 in 「日本社会党」) is more often part of the answer than a repeat.
MIN_RESTATED_RUN = 2
# What may be cut at the edges besides restated runs.
_FUNCTION_POS = frozenset({"助詞", "助動詞", "補助記号", "記号", "空白"})
# Parts of a noun phrase: a restated run attached to one of these belongs to the answer.
_NOUN_POS = frozenset({"名詞", "接尾辞"})
_TOPIC_PARTICLES = frozenset({"は"})  # not が: 「富士山が高い」 answers 「富士山と浅間山、どちらが高い？」
# The phrase must hold one of these, or it is no phrase.
_CONTENT_POS = frozenset({"名詞", "接尾辞", "形状詞"})


def _key(m: "Morpheme") -> str:
    return unicodedata.normalize("NFKC", m.surface).lower()


def _restated(sentence: list["Morpheme"], words: list[str], question: list["Morpheme"], asked: list[str]) -> list[bool]:
    """For each morpheme of the sentence: does it restate the question (a run of ≥ MIN_RESTATED_RUN
    morphemes the question has, or the question's topic said again)? `words`, `asked`: their keys."""
    marked = [False] * len(words)
    for i in range(len(words)):
        longest = 0
        for j in range(len(asked)):
            n = 0
            while i + n < len(words) and j + n < len(asked) and words[i + n] == asked[j + n]:
                n += 1
            longest = max(longest, n)
        if longest >= MIN_RESTATED_RUN:
            marked[i : i + longest] = [True] * longest
    # The question's topic or subject said again (「RAGは…」 for 「RAGとは何の略？」): a whole noun
    # phrase of the question (not a part of one: 石油 of 石油輸出地域), followed by は.
    phrases = {tuple(asked[i:j]) for i, j in _noun_runs(question)}
    for i, j in _noun_runs(sentence):
        if j < len(words) and sentence[j].surface in _TOPIC_PARTICLES and tuple(words[i:j]) in phrases:
            marked[i:j] = [True] * (j - i)
    return marked


def _noun_runs(morphemes: list["Morpheme"]) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of nouns and noun suffixes."""
    runs, i = [], 0
    while i < len(morphemes):
        j = i
        while j < len(morphemes) and morphemes[j].pos1 in _NOUN_POS:
            j += 1
        if j > i:
            runs.append((i, j))
        i = max(j, i + 1)
    return runs


def answer_phrase(question: str, sentence: str, analyzer: "Analyzer") -> str:
    """The part of `sentence` that answers `question` (citation markers dropped).

    >>> from pipeline.japanese import default_analyzer
    >>> answer_phrase("交響曲の10曲中7曲はどこの国で初演された？",
    ...               "交響曲の10曲中7曲はドイツで初演されている。[3]", default_analyzer())
    'ドイツ'
    """
    text = claim_text(sentence).strip()
    morphemes, question_morphemes = analyzer.morphemes(text), analyzer.morphemes(question)
    words, asked = [_key(m) for m in morphemes], [_key(m) for m in question_morphemes]
    restated = _restated(morphemes, words, question_morphemes, asked)

    def cut(k: int) -> bool:
        m = morphemes[k]
        return restated[k] or m.pos1 in _FUNCTION_POS or m.lemma in STOP_LEMMAS

    start, end = 0, len(morphemes)
    while start < end and cut(start):
        start += 1
    while end > start and cut(end - 1):
        end -= 1
    # A compound noun is not cut: the question's 何派遣団 / 何m (the counter or head noun it
    # repeats is part of the answer), or 住居表示 of 住居表示台帳.
    while start < end < len(morphemes) and morphemes[end].pos1 in _NOUN_POS and morphemes[end - 1].pos1 in _NOUN_POS:
        end += 1
    while 0 < start < end and morphemes[start - 1].pos1 == "名詞" and morphemes[start].pos1 in _NOUN_POS:
        start -= 1
    # The predicate after the answer (…に及ぶ, …を備える, …と呼ぶ, …が多い): the answer is what it takes.
    while end > start and morphemes[end - 1].pos1 in ("動詞", "形容詞"):
        shorter = end - 1
        while shorter > start and cut(shorter - 1):
            shorter -= 1
        if not any(m.pos1 in _NOUN_POS for m in morphemes[start:shorter]):
            break
        end = shorter
    start, end = _balanced(morphemes, start, end)
    core = morphemes[start:end]
    if not any(m.pos1 in _CONTENT_POS for m in core):
        return _chosen(text, morphemes, words, question_morphemes, asked) or text
    return text[core[0].start : core[-1].end]


def _chosen(text: str, morphemes: list["Morpheme"], keys: list[str], question: list["Morpheme"],
            asked: list[str]) -> str | None:
    """For 「AとB、どちらが…？」: the option the sentence puts in the answer's place (「…のはBです」,
    「Aが高い」), or None. An option only listed again (「AとB、…」) is no choice."""
    options = {tuple(asked[i:j]) for i, j in _noun_runs(question)
               if (j < len(asked) and asked[j] == "と") or (i and asked[i - 1] == "と")}
    chosen = None
    for i, j in _noun_runs(morphemes):
        after = keys[j] if j < len(keys) else "。"
        listed = (i and keys[i - 1] == "と") or after == "と"
        if tuple(keys[i:j]) in options and not listed and (after in ("が", "は", "。") or morphemes[j].pos1 == "助動詞"):
            chosen = text[morphemes[i].start : morphemes[j - 1].end]
    return chosen


_ASIDES = frozenset("（([［〔")  # a reading, a date, a note: left out when cut; a quoted name is completed


def _balanced(morphemes: list["Morpheme"], start: int, end: int) -> tuple[int, int]:
    """No bracket left half-open: a name cut inside its 『』 gets its other half back; an aside
    whose closing bracket was cut off (「1763年（宝暦13年」) is left out."""
    stack: list[int] = []  # morpheme indexes of open brackets
    for k in range(start, end):
        surface = morphemes[k].surface
        if surface in OPEN_TO_CLOSE:
            stack.append(k)
        elif surface in CLOSE_TO_OPEN:
            if stack and morphemes[stack[-1]].surface == CLOSE_TO_OPEN[surface]:
                stack.pop()
            else:  # opened before the phrase: take the phrase back to its opening
                opener = next((j for j in range(start - 1, -1, -1) if morphemes[j].surface == CLOSE_TO_OPEN[surface]), None)
                if opener is not None:
                    start = opener
    for k in stack:
        closer = OPEN_TO_CLOSE[morphemes[k].surface]
        after = next((j for j in range(end, len(morphemes)) if morphemes[j].surface == closer), None)
        if morphemes[k].surface in _ASIDES or after is None:
            end = k
            while end > start and morphemes[end - 1].pos1 in _FUNCTION_POS:
                end -= 1
            break
        end = after + 1
    return start, end
