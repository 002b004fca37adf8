"""What one text says, as sets a premise and a claim can be compared by.

`analyze(text, analyzer)` reads a text once with MeCab: content-word lemmas (so
走った = 走ります), proper nouns and Latin words, normalized quantities
(`pipeline.check.numbers`), character bigrams, and the predicate–argument structure
(`pipeline.check.predicates`). `Analysis.merge` joins the analyses of several sentences.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from pipeline.check.numbers import Quantity, extract_quantities
from pipeline.check.predicates import read_predicates, word_of

if TYPE_CHECKING:
    from pipeline.japanese import Analyzer, Morpheme

__all__ = ["Analysis", "WORD_WEIGHTS", "analyze", "in_text"]

# How much a content word of a claim counts, by class: nouns and predicates carry
# the claim, other content words (adverbs) count half.
WORD_WEIGHTS = {"noun": 1.0, "pred": 1.0, "other": 0.5}

_LATIN = re.compile(r"[a-z][a-z0-9._+-]*[a-z0-9]|[a-z]")


@dataclass(frozen=True)
class Analysis:
    """Comparable content of one text (or of several merged)."""

    text: str  # NFKC, lowercased
    lemmas: set[str] = field(default_factory=set)
    content: list[tuple[str, str, str]] = field(default_factory=list)  # (lemma, surface, class)
    names: list[str] = field(default_factory=list)
    quantities: list[Quantity] = field(default_factory=list)
    triples: set[tuple[str, str, str]] = field(default_factory=set)
    polarity: dict[str, set[tuple[bool, bool]]] = field(default_factory=dict)  # pred -> {(negated, hedged)}
    bigrams: set[str] = field(default_factory=set)
    raw: str = ""  # NFKC, case kept (quantities: 2.5M is not 2.5m)
    phrases: list[str] = field(default_factory=list)  # noun phrases (compounds), as written
    focus: list[str] = field(default_factory=list)  # noun phrases of copula predicates: 「XはYである」's Y

    @staticmethod
    def merge(parts: Sequence["Analysis"]) -> "Analysis":
        out = Analysis("\n".join(p.text for p in parts), raw="\n".join(p.raw for p in parts))
        for p in parts:
            out.lemmas.update(p.lemmas)
            out.content.extend(p.content)
            out.names.extend(p.names)
            out.quantities.extend(p.quantities)
            out.triples.update(p.triples)
            for k, v in p.polarity.items():
                out.polarity.setdefault(k, set()).update(v)
            out.bigrams.update(p.bigrams)
            out.phrases.extend(p.phrases)
            out.focus.extend(p.focus)
        return out


def in_text(word: str, premise: Analysis) -> bool:
    """Is `word` among the premise's lemmas, or (two characters or more) in its text?"""
    return word in premise.lemmas or (len(word) >= 2 and word in premise.text)


def _bigrams(text: str) -> set[str]:
    chars = [c for c in text if c.isalnum()]
    return {a + b for a, b in zip(chars, chars[1:])}


def _is_content(m: "Morpheme") -> bool:
    from pipeline.japanese import CONTENT_POS, DROPPED_POS2, STOP_LEMMAS

    return (
        m.pos1 in CONTENT_POS
        and m.pos2 not in DROPPED_POS2
        and m.pos2 != "数詞"
        and m.lemma not in STOP_LEMMAS
        and word_of(m).strip() != ""
    )


def _class(m: "Morpheme") -> str:
    if m.pos1 == "名詞":
        return "noun"
    if m.pos1 in ("動詞", "形容詞", "形状詞"):
        return "pred"
    return "other"


def analyze(text: str, analyzer: "Analyzer") -> Analysis:
    """Lemmas, names, quantities, argument triples and predicate polarity of `text`."""
    raw = unicodedata.normalize("NFKC", text)
    norm = raw.lower()
    if len(norm) != len(raw):  # a few letters change length when lowercased
        raw = norm
    ms = analyzer.morphemes(norm)
    lemmas: set[str] = set()
    content: list[tuple[str, str, str]] = []
    names: list[str] = []
    for m in ms:
        if _is_content(m):
            w = word_of(m)
            lemmas.add(w)
            lemmas.add(m.surface.lower())
            content.append((w, m.surface.lower(), _class(m)))
        if m.pos2 == "固有名詞" and m.surface.strip():
            names.append(m.surface.lower())
    names += [w for w in _LATIN.findall(norm) if len(w) >= 2 and not w.isdigit()]
    p = read_predicates(ms)
    return Analysis(
        norm, lemmas=lemmas, content=content, names=names, quantities=extract_quantities(raw),
        triples=p.triples, polarity=p.polarity, bigrams=_bigrams(norm), raw=raw,
        phrases=p.phrases, focus=p.focus,
    )
