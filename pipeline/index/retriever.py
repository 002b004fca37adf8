"""The llama-index face of retrieval: `HybridRetriever(BaseRetriever)` over an `IndexSnapshot`.

    retriever = HybridRetriever.from_settings(settings)          # hybrid, settings.top_k
    retriever.retrieve("Ollamaの既定のポートは？")               # -> list[NodeWithScore]

It runs `pipeline.index.search.search` (BM25, dense, or both fused) and returns each chunk
as a `TextNode` made by `chunk_to_node`, so a llama-index user can drop it into a
`RetrieverQueryEngine`.

Reranking (`pipeline.index.rerank`): with the setting `rerank` on (off by default), the
`reranker` (the shipped Japanese cross-encoder unless configured) re-orders the first
`reranker_candidates` (default 20) fused chunks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle

from pipeline.documents import ScoredChunk
from pipeline.index.rerank import DEFAULT_RERANK_CANDIDATES, Reranker, load_reranker, search_reranked
from pipeline.index.search import RETRIEVERS, search
from pipeline.index.snapshot import IndexSnapshot
from pipeline.nodes import chunk_to_node

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = [
    "DEFAULT_RERANK_CANDIDATES",
    "HybridRetriever",
    "Reranker",
    "load_reranker",
]


class HybridRetriever(BaseRetriever):
    """BM25 + dense retrieval fused (or either alone), optionally reranked."""

    def __init__(
        self,
        index: IndexSnapshot,
        top_k: int = 5,
        mode: str = "hybrid",
        fusion: str | None = None,
        reranker: Reranker | None = None,
        rerank_candidates: int = DEFAULT_RERANK_CANDIDATES,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if mode not in RETRIEVERS:
            raise ValueError(f"unknown retriever {mode!r}: choose {', '.join(RETRIEVERS)}")
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        self.index = index
        self.top_k = top_k
        self.mode = mode
        self.fusion = fusion
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        super().__init__(callback_manager=callback_manager)

    @classmethod
    def from_settings(
        cls, settings: "Settings", index: IndexSnapshot | None = None, **overrides
    ) -> "HybridRetriever":
        """Retriever as configured: settings.retriever, top_k, fusion, reranker (when settings.rerank)."""
        from pipeline.index.snapshot import open_index

        kw = dict(
            top_k=settings.top_k,
            mode=settings.retriever,
            fusion=settings.fusion,
            reranker=load_reranker(settings) if settings.rerank else None,
            rerank_candidates=settings.reranker_candidates,
        )
        kw.update(overrides)
        return cls(index or open_index(settings), **kw)

    def retrieve_chunks(self, query: str, k: int | None = None) -> list[ScoredChunk]:
        """The best `k` (default top_k) chunks as the pipeline's own values."""
        k = k or self.top_k
        if self.reranker is None:
            return search(self.index, query, k=k, retriever=self.mode, fusion=self.fusion)
        return search_reranked(self.index, query, k, self.reranker, self.rerank_candidates, self.mode, self.fusion)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [
            NodeWithScore(node=chunk_to_node(sc.chunk), score=sc.score)
            for sc in self.retrieve_chunks(query_bundle.query_str)
        ]
