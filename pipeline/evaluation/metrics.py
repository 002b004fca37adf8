"""Retrieval metrics, as pure functions of a ranked list of document IDs and the gold set.

Relevance is binary and a question may have several gold documents:

- Recall@k: the fraction of the gold documents found in the top k.
- MRR@k: 1 / rank of the first gold document in the top k (0 when none is).
- nDCG@k: DCG = sum over gold documents at rank r <= k of 1 / log2(r + 1), divided by
  the DCG of the ideal list (all gold documents first).

A ranked list may repeat a document (several chunks of it): `dedupe` keeps its first,
best, position, so a document ranks at its best chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = [
    "CUTOFFS",
    "QueryScores",
    "dedupe",
    "mean_scores",
    "mrr_at_k",
    "ndcg_at_k",
    "percentile",
    "recall_at_k",
    "score_query",
]

CUTOFFS = (1, 5, 10)


def dedupe(ranked: Iterable[str]) -> list[str]:
    """IDs in order of first appearance."""
    seen: set[str] = set()
    out: list[str] = []
    for x in ranked:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def recall_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    gold = set(gold)
    if not gold:
        return 0.0
    return len(gold.intersection(ranked[:k])) / len(gold)


def mrr_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    gold = set(gold)
    for rank, x in enumerate(ranked[:k], 1):
        if x in gold:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    gold = set(gold)
    if not gold:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank, x in enumerate(ranked[:k], 1) if x in gold)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    return dcg / ideal


@dataclass(frozen=True)
class QueryScores:
    recall: dict[int, float]  # cutoff -> recall
    mrr10: float
    ndcg10: float


def score_query(ranked: Sequence[str], gold: Iterable[str]) -> QueryScores:
    """All metrics of one question; `ranked` may repeat IDs (deduplicated here)."""
    gold = set(gold)
    docs = dedupe(ranked)
    return QueryScores(
        recall={k: recall_at_k(docs, gold, k) for k in CUTOFFS},
        mrr10=mrr_at_k(docs, gold, 10),
        ndcg10=ndcg_at_k(docs, gold, 10),
    )


def mean_scores(scores: Sequence[QueryScores]) -> dict[str, float]:
    """Means over questions, keyed as in `rag eval retrieval --json`."""
    n = len(scores)
    if n == 0:
        return {**{f"recall@{k}": 0.0 for k in CUTOFFS}, "mrr@10": 0.0, "ndcg@10": 0.0}
    out = {f"recall@{k}": sum(s.recall[k] for s in scores) / n for k in CUTOFFS}
    out["mrr@10"] = sum(s.mrr10 for s in scores) / n
    out["ndcg@10"] = sum(s.ndcg10 for s in scores) / n
    return out


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
