"""The llama-index face of retrieval: `HybridRetriever(BaseRetriever)` over an `IndexSnapshot`.

    retriever = HybridRetriever.from_settings(settings)          # hybrid, settings.top_k
    retriever.retrieve("Ollamaの既定のポートは？")               # -> list[NodeWithScore]

It runs `pipeline.index.search.search` (BM25, dense, or both fused) and returns each chunk
as a `TextNode` made by `chunk_to_node`, so a llama-index user can drop it into a
`RetrieverQueryEngine`.

Reranking seam: a `Reranker` re-orders the first `rerank_candidates` fused chunks. None
ships (no cross-encoder runs offline here); one is plugged in by the setting `reranker`,
an import path `"package.module:factory"` where `factory(settings) -> Reranker`, with
`reranker_candidates` (default 20) chunks handed to it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle

from pipeline.errors import ConfigError
from pipeline.index.search import RETRIEVERS, search
from pipeline.documents import ScoredChunk
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

DEFAULT_RERANK_CANDIDATES = 20


@runtime_checkable
class Reranker(Protocol):
    """Re-scores retrieved chunks for a query; returns them best first (may drop some)."""

    def rerank(self, query: str, chunks: Sequence[ScoredChunk]) -> list[ScoredChunk]: ...


def load_reranker(settings: "Settings") -> Reranker | None:
    """The reranker named by the setting `reranker` ("module:factory"), or None when unset."""
    spec = settings.reranker
    if not spec:
        return None
    module, _, attr = str(spec).partition(":")
    if not module or not attr:
        raise ConfigError(
            f"設定 reranker の形式が違います: {spec!r}\n"
            "「パッケージ.モジュール:関数名」の形で、設定を受け取り Reranker を返す関数を指定してください。"
        )
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            f"設定 reranker の {spec!r} を読み込めません ({err})。\n"
            "パッケージがインストールされているか、名前が正しいか確かめてください。"
        ) from err
    reranker = factory(settings)
    if not isinstance(reranker, Reranker):
        raise ConfigError(f"設定 reranker の {spec!r} が rerank(query, chunks) を持つ物を返しません。")
    return reranker


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
        """Retriever as configured: settings.retriever, top_k, fusion, reranker."""
        from pipeline.index.snapshot import open_index

        kw = dict(
            top_k=settings.top_k,
            mode=settings.retriever,
            fusion=settings.fusion,
            reranker=load_reranker(settings),
            rerank_candidates=settings.reranker_candidates,
        )
        kw.update(overrides)
        return cls(index or open_index(settings), **kw)

    def retrieve_chunks(self, query: str, k: int | None = None) -> list[ScoredChunk]:
        """The best `k` (default top_k) chunks as the pipeline's own values."""
        k = k or self.top_k
        if self.reranker is None:
            return search(self.index, query, k=k, retriever=self.mode, fusion=self.fusion)
        pool = search(
            self.index, query, k=max(k, self.rerank_candidates), retriever=self.mode, fusion=self.fusion
        )
        return list(self.reranker.rerank(query, pool))[:k]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [
            NodeWithScore(node=chunk_to_node(sc.chunk), score=sc.score)
            for sc in self.retrieve_chunks(query_bundle.query_str)
        ]
