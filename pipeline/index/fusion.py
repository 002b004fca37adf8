"""Fusing a BM25 ranking and a dense ranking into one: pure functions, one per rule, by name.

    fuse("anchored", sparse, dense, sparse_ceiling=12.7, depth=50) -> [(id, score), ...]

Each ranking is `(id, score)` pairs, best first. An empty ranking contributes nothing,
so fusing with one empty side returns the other side's order.

Rules (FUSIONS):

- "anchored" (default): each score is put on an absolute scale, then the two are
  averaged.
    BM25:  score / sparse_ceiling, where the ceiling is what a chunk holding every query
           token at its best would score (`BM25Index.upper_bound`): the share of the
           query's lexical evidence the chunk holds, in 0..1.
    dense: (cos - mean) / (1 - mean), with `mean` the mean cosine of the dense list: how
           far the chunk stands above this query's background similarity, measured
           against a perfect match (cos = 1).
  A list with no good match stays low here, where min-max or z-scores would stretch it
  to the same range as a list with a clear answer: the retriever that is confident on a
  query leans the fusion its way, with no weight to tune. A chunk missing from a list
  gets that list's last score (a chunk not listed scores at most that), or 0 for BM25
  when the list is shorter than `depth` (every matching chunk is listed).
- "rrf": reciprocal rank fusion, 1/(k + rank) summed, k = 60.
- "zscore": per-list z-scores, averaged (a missing chunk gets the list's lowest).
- "minmax": per-list min-max to 0..1, averaged (a missing chunk gets 0).

Why "anchored": benchmarks/results/retrieval.md compares the rules on five sets, among
them jaquad_dev, held out from the design, where BM25 leads dense by 7 points and plain
RRF falls below BM25 alone while "anchored" stays above both.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

__all__ = [
    "DEFAULT_FUSION",
    "FUSIONS",
    "RRF_K",
    "Fused",
    "Ranking",
    "anchored",
    "fuse",
    "minmax",
    "rrf",
    "zscore",
]

Ranking = Sequence[tuple[str, float]]  # (id, score), best first
Fused = list[tuple[str, float]]

DEFAULT_FUSION = "anchored"
RRF_K = 60


def _ordered(scores: dict[str, float]) -> Fused:
    """Best first; ties keep first-seen order (dicts keep insertion order, sort is stable)."""
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _candidates(sparse: Ranking, dense: Ranking) -> list[str]:
    return list(dict.fromkeys([key for key, _ in sparse] + [key for key, _ in dense]))


def rrf(sparse: Ranking, dense: Ranking, *, k: float = RRF_K, **_) -> Fused:
    """Reciprocal rank fusion: sum of 1 / (k + rank) over the lists a chunk is in."""
    scores: dict[str, float] = {}
    for ranking in (sparse, dense):
        for rank, (key, _) in enumerate(ranking, 1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return _ordered(scores)


def _average(
    sparse: Ranking, dense: Ranking, a: dict[str, float], b: dict[str, float], miss_a: float, miss_b: float
) -> Fused:
    if not sparse:
        return _ordered({key: b[key] for key, _ in dense})
    if not dense:
        return _ordered({key: a[key] for key, _ in sparse})
    return _ordered({key: 0.5 * a.get(key, miss_a) + 0.5 * b.get(key, miss_b) for key in _candidates(sparse, dense)})


def _zscores(ranking: Ranking) -> dict[str, float]:
    if not ranking:
        return {}
    values = [s for _, s in ranking]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {key: (s - mean) / sd if sd > 0 else 0.0 for key, s in ranking}


def zscore(sparse: Ranking, dense: Ranking, **_) -> Fused:
    """Mean of per-list z-scores; a chunk missing from a list gets that list's lowest z."""
    a, b = _zscores(sparse), _zscores(dense)
    return _average(sparse, dense, a, b, min(a.values(), default=0.0), min(b.values(), default=0.0))


def _minmax(ranking: Ranking) -> dict[str, float]:
    if not ranking:
        return {}
    lo, hi = min(s for _, s in ranking), max(s for _, s in ranking)
    return {key: (s - lo) / (hi - lo) if hi > lo else 1.0 for key, s in ranking}


def minmax(sparse: Ranking, dense: Ranking, **_) -> Fused:
    """Mean of per-list min-max scores (0..1); a chunk missing from a list gets 0."""
    return _average(sparse, dense, _minmax(sparse), _minmax(dense), 0.0, 0.0)


def anchored(
    sparse: Ranking,
    dense: Ranking,
    *,
    sparse_ceiling: float | None = None,
    depth: int | None = None,
    **_,
) -> Fused:
    """Mean of BM25 / its query ceiling and the dense cosine's gain over the list mean.

    `sparse_ceiling`: the query's BM25 upper bound (`BM25Index.upper_bound`); without it
    the list's top score is used. `depth`: how many hits each list was asked for; a
    BM25 list shorter than that holds every matching chunk, so a chunk missing from it
    scores 0 rather than the list's last score.
    """
    if not sparse or not dense:
        return [(key, float(s)) for key, s in (sparse or dense)]
    ceiling = sparse_ceiling if sparse_ceiling and sparse_ceiling > 0 else max(s for _, s in sparse)
    ceiling = ceiling if ceiling > 0 else 1.0
    complete = depth is not None and len(sparse) < depth
    a = {key: s / ceiling for key, s in sparse}
    miss_a = 0.0 if complete else sparse[-1][1] / ceiling
    mean = sum(s for _, s in dense) / len(dense)
    span = max(1.0 - mean, 1e-9)
    b = {key: (s - mean) / span for key, s in dense}
    miss_b = (dense[-1][1] - mean) / span
    return _average(sparse, dense, a, b, miss_a, miss_b)


FUSIONS: dict[str, Callable[..., Fused]] = {
    "anchored": anchored,
    "minmax": minmax,
    "rrf": rrf,
    "zscore": zscore,
}


def fuse(method: str, sparse: Ranking, dense: Ranking, **context) -> Fused:
    """Fuse with the rule named `method`; `context` (sparse_ceiling, depth) goes to rules that use it."""
    try:
        fn = FUSIONS[method]
    except KeyError:
        raise ValueError(
            f"unknown fusion {method!r}: choose one of {', '.join(sorted(FUSIONS))}"
        ) from None
    return fn(sparse, dense, **context)
