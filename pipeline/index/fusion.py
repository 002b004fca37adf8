"""Fusing a BM25 ranking and a dense ranking into one (placeholder; finished after measuring)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

Ranking = Sequence[tuple[str, float]]  # (id, score), best first
Fused = list[tuple[str, float]]

RRF_K = 60
DEFAULT_FUSION = "rrf"


def rrf(sparse: Ranking, dense: Ranking, k: float = RRF_K) -> Fused:
    scores: dict[str, float] = {}
    for ranking in (sparse, dense):
        for rank, (key, _) in enumerate(ranking, 1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return _ordered(scores)


def _ordered(scores: dict[str, float]) -> Fused:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


FUSIONS: dict[str, Callable[..., Fused]] = {"rrf": rrf}


def fuse(method: str, sparse: Ranking, dense: Ranking, **params) -> Fused:
    try:
        fn = FUSIONS[method]
    except KeyError:
        raise ValueError(
            f"unknown fusion {method!r}: choose one of {', '.join(sorted(FUSIONS))}"
        ) from None
    return fn(sparse, dense, **params)
