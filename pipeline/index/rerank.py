"""The reranking seam: a `Reranker` re-orders the first `reranker_candidates` fused chunks.

The setting `reranker` names its factory by import path, `"package.module:factory"` with
`factory(settings) -> Reranker`; the default is the shipped Japanese cross-encoder
(`pipeline.answer.rerank:cross_encoder`). `rerank` (setting, off by default) decides whether
answers use it; `rag search` does only on request (`--rerank`), so a plain search never loads a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from pipeline.documents import ScoredChunk
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.index.snapshot import IndexSnapshot
    from pipeline.settings import Settings

__all__ = ["DEFAULT_RERANK_CANDIDATES", "Reranker", "load_reranker", "reranked", "search_reranked"]

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


def reranked(reranker: Reranker, query: str, pool: Sequence[ScoredChunk], k: int,
             candidates: int = DEFAULT_RERANK_CANDIDATES) -> list[ScoredChunk]:
    """The best `k` of `pool` after reranking its first `candidates` (the rest keep their order after them)."""
    head = list(reranker.rerank(query, list(pool[:candidates])))
    return (head + list(pool[candidates:]))[:k]


def search_reranked(index: "IndexSnapshot", query: str, k: int, reranker: Reranker,
                    candidates: int = DEFAULT_RERANK_CANDIDATES, retriever: str = "hybrid",
                    fusion: str | None = None) -> list[ScoredChunk]:
    """`search` for `k` chunks, its first `candidates` re-ordered by `reranker` (fetched however deep `k` asks)."""
    from pipeline.index.search import search

    pool = search(index, query, k=max(k, candidates), retriever=retriever, fusion=fusion)
    return reranked(reranker, query, pool, k, candidates)
