"""Top-k chunks for a question: BM25, dense, or both fused (see `pipeline.index.fusion`)."""

from __future__ import annotations

from typing import Literal

from pipeline.index.fusion import DEFAULT_FUSION, fuse
from pipeline.index.snapshot import IndexSnapshot, ScoredChunk

RetrieverName = Literal["hybrid", "bm25", "dense"]
RETRIEVERS = ("bm25", "dense", "hybrid")
CANDIDATES = 50  # each retriever's list depth before fusion


def search(
    index: IndexSnapshot,
    query: str,
    k: int = 5,
    retriever: RetrieverName = "hybrid",
    fusion: str | None = None,
) -> list[ScoredChunk]:
    """The `k` best chunks; hybrid fuses both retrievers' top `max(k, CANDIDATES)`."""
    if retriever == "bm25":
        return index.sparse(query, k)
    if retriever == "dense":
        return index.dense(query, k)
    if retriever != "hybrid":
        raise ValueError(f"unknown retriever {retriever!r}: choose bm25, dense or hybrid")
    n = max(k, CANDIDATES)
    sparse = index.sparse(query, n)
    dense = index.dense(query, n)
    chunks = {sc.chunk.id: sc.chunk for sc in (*sparse, *dense)}
    fused = fuse(
        fusion or DEFAULT_FUSION,
        [(sc.chunk.id, sc.score) for sc in sparse],
        [(sc.chunk.id, sc.score) for sc in dense],
    )
    return [ScoredChunk(chunks[cid], score) for cid, score in fused[:k]]
