"""Top-k chunks for a question: BM25, dense, or both fused."""

from __future__ import annotations

from typing import Literal

from pipeline.index.snapshot import IndexSnapshot, ScoredChunk

RetrieverName = Literal["hybrid", "bm25", "dense"]
RRF_K = 60
CANDIDATES = 50


def rrf(rankings: list[list[ScoredChunk]], k: int = RRF_K) -> list[ScoredChunk]:
    """Reciprocal rank fusion; an empty ranking contributes nothing."""
    scores: dict[str, float] = {}
    chunks = {}
    for ranking in rankings:
        for rank, sc in enumerate(ranking):
            scores[sc.chunk.id] = scores.get(sc.chunk.id, 0.0) + 1.0 / (k + rank + 1)
            chunks[sc.chunk.id] = sc.chunk
    order = sorted(scores, key=lambda cid: -scores[cid])
    return [ScoredChunk(chunks[cid], scores[cid]) for cid in order]


def search(index: IndexSnapshot, query: str, k: int = 5, retriever: RetrieverName = "hybrid"):
    if retriever == "bm25":
        return index.sparse(query, k)
    if retriever == "dense":
        return index.dense(query, k)
    if retriever != "hybrid":
        raise ValueError(f"unknown retriever {retriever!r}: choose bm25, dense or hybrid")
    n = max(k, CANDIDATES)
    return rrf([index.sparse(query, n), index.dense(query, n)])[:k]
