"""The features of a (claim, cited sources) pair: named floats the fitted model reads.

A cited source is read once into a `Premise` (its evidence sentences, analysed); a claim
into an `Analysis`. `pair_features` compares them:

* coverage of the claim's content words, character bigrams and noun phrases;
* mismatches that alone make a claim wrong (numbers, names, case roles, negation,
  modality, the focus of a copula claim), the *sparse* features;
* where the claim's words sit: in one or two adjacent sentences (`window_coverage`), in
  one stretch about as long as the claim (`span_coverage`);
* the semantic stage's score of the closest sentence, when there is a semantic stage
  (`pipeline.check.semantic`; the embedder's cosine today).

`FEATURES[mode]` is the order the fitted model reads them in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from pipeline.check.analysis import Analysis, analyze, in_text
from pipeline.check.evidence import evidence_spans
from pipeline.check.numbers import extract_quantities, quantities_match, unmatched_quantities
from pipeline.check.predicates import ANY_PREDICATE, roles_agree, roles_conflict

if TYPE_CHECKING:
    import numpy as np

    from pipeline.japanese import Analyzer

__all__ = [
    "CHEAP_FEATURES",
    "EMBED_FEATURES",
    "FEATURES",
    "Premise",
    "SPARSE_FEATURES",
    "WORD_WEIGHTS",
    "cheap_features",
    "feature_names",
    "pair_features",
    "sentence_scores",
    "span_coverage",
    "window_coverage",
]

CHEAP_FEATURES = (
    "coverage",  # weighted fraction of the claim's content words found in the premise
    "bigram_coverage",  # fraction of the claim's character bigrams found in the premise
    "uncovered_nouns",  # count, capped at 3
    "uncovered_preds",  # count, capped at 3
    "number_mismatch",  # claim quantities the premise lacks, capped at 2
    "name_mismatch",  # claim proper nouns / Latin words the premise lacks, capped at 2
    "role_conflict",  # claim triples whose case role differs from the premise's, capped at 2
    "role_match",  # claim triples found verbatim in the premise, capped at 3
    "negation_mismatch",  # shared predicates with opposite polarity, capped at 2
    "modality_mismatch",  # claim asserts what the premise only hedges, capped at 2
    "claim_words",  # log(1 + content words of the claim)
    "window_coverage",  # best share of the claim's words, names and numbers found in 1-2 adjacent sentences
    "span_coverage",  # the same share inside a stretch of premise text about as long as the claim
    "phrase_coverage",  # share of the claim's noun phrases (whole compounds) found verbatim
    "focus_missing",  # the noun phrase a copula claim asserts (「…は Y である」) is not in the premise
    "focus_span_coverage",  # span_coverage among stretches that hold that noun phrase
)
EMBED_FEATURES = CHEAP_FEATURES + ("cosine",)
FEATURES = {"cheap": CHEAP_FEATURES, "embed": EMBED_FEATURES}

# Mismatch signals: rare, and each one alone makes a claim wrong. The model takes them
# linearly (see `pipeline.check.model`).
SPARSE_FEATURES = (
    "number_mismatch", "name_mismatch", "role_conflict", "negation_mismatch", "modality_mismatch", "focus_missing",
)

# How much a content word of a claim counts, by class: nouns and predicates carry
# the claim, other content words (adverbs) count half.
WORD_WEIGHTS = {"noun": 1.0, "pred": 1.0, "other": 0.5}


def feature_names(semantic_feature: str | None = None) -> tuple[str, ...]:
    """The features a checker computes: the cheap ones, then its semantic stage's, if any."""
    return CHEAP_FEATURES + ((semantic_feature,) if semantic_feature else ())


@dataclass(frozen=True)
class Premise:
    """A cited source, analysed once per check: its evidence sentences and their analyses."""

    spans: list[tuple[int, int]]  # sentence spans inside the text (evidence only)
    texts: list[str]  # those sentences, verbatim
    sentences: list[Analysis]
    whole: Analysis

    @staticmethod
    def read(text: str, analyzer: "Analyzer") -> "Premise":
        spans = evidence_spans(text)
        texts = [text[s:e] for s, e in spans]
        sentences = [analyze(t, analyzer) for t in texts]
        whole = Analysis.merge(sentences) if sentences else Analysis("")
        return Premise(spans, texts, sentences, whole)


def cheap_features(premise: Analysis, claim: Analysis) -> dict[str, float]:
    """The cheap signals for one (premise, claim) pair, as named floats."""
    tot = cov = 0.0
    unc_n = unc_p = 0
    for lemma, surface, cls in claim.content:
        w = WORD_WEIGHTS[cls]
        tot += w
        if in_text(lemma, premise) or in_text(surface, premise):
            cov += w
        elif cls == "noun":
            unc_n += 1
        elif cls == "pred":
            unc_p += 1
    coverage = cov / tot if tot else 1.0
    big = len(claim.bigrams & premise.bigrams) / len(claim.bigrams) if claim.bigrams else 1.0
    nums = len(unmatched_quantities(claim.quantities, premise.quantities))
    names = len({w for w in claim.names if w not in premise.text})
    conflict = match = 0
    prem_by_key: dict[tuple[str, str], set[str]] = {}
    for arg, case, pred in premise.triples:
        prem_by_key.setdefault((arg, pred), set()).add(case)
    for arg, case, pred in claim.triples:
        cases = prem_by_key.get((arg, pred))
        if not cases or pred in ANY_PREDICATE:
            continue
        if roles_agree(case, cases):
            match += 1
        elif roles_conflict(case, cases):
            conflict += 1
    neg = mod = 0
    for pred, pol in claim.polarity.items():
        prem = premise.polarity.get(pred)
        if not prem or pred in ANY_PREDICATE:
            continue
        for negated, hedged in pol:
            if not any(pn == negated for pn, _ in prem):
                neg += 1
            elif not hedged and all(ph for pn, ph in prem if pn == negated):
                mod += 1
    phrases = [ph for ph in dict.fromkeys(claim.phrases) if len(ph) >= 2]
    phrase_cov = sum(ph in premise.text for ph in phrases) / len(phrases) if phrases else 1.0
    focus_missing = float(any(len(ph) >= 1 and ph not in premise.text for ph in claim.focus))
    return {
        "phrase_coverage": phrase_cov,
        "focus_missing": focus_missing,
        "coverage": coverage,
        "bigram_coverage": big,
        "uncovered_nouns": float(min(unc_n, 3)),
        "uncovered_preds": float(min(unc_p, 3)),
        "number_mismatch": float(min(nums, 2)),
        "name_mismatch": float(min(names, 2)),
        "role_conflict": float(min(conflict, 2)),
        "role_match": float(min(match, 3)),
        "negation_mismatch": float(min(neg, 2)),
        "modality_mismatch": float(min(mod, 2)),
        "claim_words": math.log1p(len(claim.content)),
    }


def window_coverage(premises: Sequence[Sequence[Analysis]], claim: Analysis) -> float:
    """Best weighted share of the claim's content words, names and quantities found
    together in one sentence or two adjacent sentences of one premise.

    A wrong answer taken from elsewhere in the paragraph shares all its words with
    the paragraph, but not with the sentence that holds the rest of the claim.
    """
    items: list[tuple[float, Callable[[Analysis], bool]]] = []
    for lemma, surface, cls in claim.content:
        items.append((WORD_WEIGHTS[cls], lambda a, l=lemma, s=surface: in_text(l, a) or in_text(s, a)))
    for name in set(claim.names):
        items.append((1.0, lambda a, n=name: n in a.text))
    for q in claim.quantities:
        items.append((1.0, lambda a, q=q: not unmatched_quantities([q], a.quantities)))
    total = sum(w for w, _ in items)
    if not total:
        return 1.0
    best = 0.0
    for sentences in premises:
        hits = [[test(a) for _, test in items] for a in sentences]
        for i in range(len(sentences)):
            for j in (i, i + 1):
                if j >= len(sentences):
                    continue
                got = sum(w for k, (w, _) in enumerate(items) if hits[i][k] or hits[j][k])
                best = max(best, got / total)
    return best


_KANJI_STEM = re.compile(r"^[\u3400-\u9fff々〆ヶ]+")


def span_coverage(premise: Analysis, claim: Analysis, with_focus: bool = False):
    """Best weighted share of the claim's items (content words, names, numbers) that
    occur inside one stretch of the premise text 1.5 times as long as the claim.

    The words of a true claim sit close together in its source; a wrong answer
    taken from another clause of the same paragraph is far from the rest.
    With `with_focus`, also the best share among stretches that hold the claim's
    focus (「…は Y である」's Y): (span, focus_span).
    """
    text = premise.text
    if not text:
        return (0.0, 0.0) if with_focus else 0.0
    items: list[tuple[float, list[int]]] = []
    for lemma, surface, cls in claim.content:
        keys = {surface, lemma}
        if cls == "pred":
            stem = _KANJI_STEM.match(lemma)
            if stem:
                keys.add(stem.group(0))
        keys = {k for k in keys if len(k) >= 2 or _KANJI_STEM.match(k)}
        if keys:  # single Latin letters and kana cannot be located reliably
            items.append((WORD_WEIGHTS[cls], _positions(text, keys)))
    for name in set(claim.names):
        items.append((1.0, _positions(text, {name})))
    if claim.quantities:
        pq = extract_quantities(premise.raw or text)
        for q in claim.quantities:
            items.append((1.0, [p.start for p in pq if quantities_match(q, p)]))
    total = sum(w for w, _ in items)
    if not total:
        return (1.0, 1.0) if with_focus else 1.0
    width = int(1.5 * max(len(claim.text), 10)) + 10
    starts = sorted({p for _, ps in items for p in ps})
    focus = _positions(text, {f for f in claim.focus if f})
    best = best_focus = 0.0
    for a in starts:
        got = sum(w for w, ps in items if any(a <= p <= a + width for p in ps)) / total
        best = max(best, got)
        if any(a <= p <= a + width for p in focus):
            best_focus = max(best_focus, got)
    if not with_focus:
        return best
    return best, (best_focus if claim.focus else best)


def _positions(text: str, keys: set[str]) -> list[int]:
    out: list[int] = []
    for k in keys:
        i = text.find(k)
        while i >= 0 and len(out) < 50:
            out.append(i)
            i = text.find(k, i + 1)
    return out


def pair_features(premises: Sequence[Premise], claim: Analysis, semantic: "Sequence[np.ndarray | None] | None" = None,
                  semantic_feature: str | None = None) -> dict[str, float]:
    """Named feature values of a claim against the sources it cites, taken together.

    `semantic`, one entry per premise, holds the semantic stage's score of each of its
    sentences (None: that premise has none); the feature is the best one, at least 0.
    """
    whole = premises[0].whole if len(premises) == 1 else Analysis.merge([p.whole for p in premises])
    f = cheap_features(whole, claim)
    f["window_coverage"] = window_coverage([p.sentences for p in premises], claim)
    spans = [span_coverage(p.whole, claim, with_focus=True) for p in premises] or [(0.0, 0.0)]
    f["span_coverage"] = max(s for s, _ in spans)
    f["focus_span_coverage"] = max(fs for _, fs in spans)
    if semantic_feature is not None:
        best = 0.0
        for scores in semantic or ():
            if scores is not None and len(scores):
                best = max(best, float(scores.max()))
        f[semantic_feature] = best
    return f


def sentence_scores(premise: Premise, claim: Analysis, semantic: "np.ndarray | None" = None) -> list[float]:
    """How close each evidence sentence of `premise` is to the claim: word and bigram
    coverage, plus the semantic score when there is one. Ranks the sentences a verdict
    points at and the ones the LLM judge reads."""
    out = []
    for k, a in enumerate(premise.sentences):
        f = cheap_features(a, claim)
        s = f["coverage"] + f["bigram_coverage"]
        if semantic is not None:
            s += float(semantic[k])
        out.append(s)
    return out
