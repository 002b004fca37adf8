"""Can the selected evidence answer the question? Decided before the model writes a word.

A 1.5B model asked about something its sources do not mention answers anyway (on
questions borrowed from another Wikipedia set it said 「分かりません」 0 times in 30, and
its invented answers often cite a source that shares their words). The question itself
says what an answer must be about: the names it asks about and its content words. When
the evidence does not mention what the question is about, the honest answer is
「資料からは分かりません」, and it costs no generation.

Signals (all in [0, 1]) and the rule are measured by `benchmarks/answerability.py`
(answerable questions of one set against questions borrowed from another).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["MIN_COVERAGE", "MIN_FALLBACK_SENTENCE", "MIN_NAMES", "Answerability", "answerability", "missing_names"]

# Chosen on jsquad_v1.3_valid_articles (own vs borrowed from jaquad_dev_articles) and checked
# on the reverse pair; see benchmarks/results/answers.md.
MIN_COVERAGE = 0.5  # share of the question's content words found in the evidence
MIN_NAMES = 0.5  # share of the question's names (proper nouns, Latin words) found in the evidence
# When the model's answer fails the checker, a source sentence is shown instead only if one
# shares at least this share of the question's content words; otherwise the answer is a refusal.
MIN_FALLBACK_SENTENCE = 0.5
_KATAKANA = re.compile(r"[ァ-ヺー]{3,}")


@dataclass(frozen=True)
class Answerability:
    answerable: bool
    features: dict[str, float] = field(default_factory=dict)
    rule: str = ""
    reason: str = ""  # Japanese, for --explain, when not answerable


def answerability(question: str, evidence: Sequence[str], analyzer) -> Answerability:
    """The signals for `question` against the `evidence` texts (titles included), and the rule's decision.

    No evidence at all is never answerable."""
    from pipeline.japanese import split_sentences

    wanted = set(analyzer.content_lemmas(question))
    text = "\n".join(evidence)
    have = set(analyzer.content_lemmas(text)) if text else set()
    coverage = len(wanted & have) / len(wanted) if wanted else 1.0
    best = 0.0
    for piece in evidence:
        for start, end in split_sentences(piece):
            lemmas = set(analyzer.content_lemmas(piece[start:end]))
            best = max(best, len(wanted & lemmas) / len(wanted) if wanted else 1.0)
    names = _names(question, analyzer)
    lowered = unicodedata.normalize("NFKC", text).lower()
    found = [n for n in names if n in lowered]
    names_share = len(found) / len(names) if names else 1.0
    features = {"coverage": round(coverage, 4), "best_sentence": round(best, 4), "names": round(names_share, 4)}
    ok = bool(evidence) and coverage >= MIN_COVERAGE and names_share >= MIN_NAMES
    reason = ""
    if names_share < MIN_NAMES:
        missing = [n for n in names if n not in found]
        reason = "資料に" + "".join(f"「{n}」" for n in missing[:3]) + "が出てこないため回答しません"
    elif not ok:
        reason = f"資料に質問の語が少ない (内容語の {coverage:.0%}) ため回答しません"
    rule = f"coverage >= {MIN_COVERAGE} and names >= {MIN_NAMES}"
    return Answerability(ok, features, rule, reason)


def _names(question: str, analyzer) -> list[str]:
    from pipeline.check.analysis import analyze

    return list(dict.fromkeys(analyze(question, analyzer).names))


def missing_names(answer: str, texts: Sequence[str], analyzer) -> list[str]:
    """Names, katakana words and nouns of `answer` that none of `texts` contain.

    A small model's invented answer is usually a name (a person, a place, a title) set
    into the question's words; the entailment model reads the shared words and lets it
    pass. MeCab tags an unknown katakana word (an invented name) as a common noun, so
    those count too; and so does any noun neither the sources nor the question have —
    on the dev sets these were the model's corrupted copies (「接手」 for 措置, 「步兵」,
    「沒有」, 「明治」 for 昭和), 6 wrong answers of 10 flagged and 2 more right only by
    also naming both options of a comparison. `texts`: the sources, and the question.
    """
    from pipeline.check.analysis import analyze
    from pipeline.check.citations import claim_text

    text = unicodedata.normalize("NFKC", "\n".join(texts)).lower()
    lemmas = set(analyzer.content_lemmas(text))
    claim = unicodedata.normalize("NFKC", claim_text(answer))
    analysis = analyze(claim, analyzer)
    nouns = [surface for lemma, surface, kind in analysis.content
             if kind == "noun" and lemma not in lemmas and lemma not in text]
    terms = [*analysis.names, *(w.lower() for w in _KATAKANA.findall(claim)), *nouns]
    return list(dict.fromkeys(t for t in terms if t.lower() not in text))
