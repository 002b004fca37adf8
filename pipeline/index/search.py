"""Top-k chunks for a question: BM25, dense, or both fused (`pipeline.index.fusion`).

Hybrid asks each retriever for its top `max(k, CANDIDATES)` chunks and fuses them with
`settings.fusion` (default "anchored"). The BM25 side is tokenized here with
`bm25_tokens`, so the query's BM25 ceiling (`BM25Index.upper_bound`) comes from the
very tokens that were scored. With `settings.follow_links` (default on), documents the
top hit names by title are then put after it (`pipeline.index.links`, a second hop).

`retrieve` is the same hybrid search returning each retriever's list beside the
chosen ranking, for callers that need all three (the answering engine judges the
retrievers' agreement and picks whole documents from them): one question is embedded
once and tokenized for BM25 once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.errors import InvalidInput
from pipeline.index.bm25 import bm25_tokens
from pipeline.index.fusion import fuse
from pipeline.index.links import follow_links
from pipeline.documents import ScoredChunk
from pipeline.index.snapshot import IndexSnapshot

__all__ = [
    "CANDIDATES",
    "MAX_QUESTION_CHARS",
    "RETRIEVERS",
    "Retrieval",
    "RetrieverName",
    "SparseResult",
    "check_query",
    "retrieve",
    "search",
    "sparse_search",
]

RetrieverName = Literal["hybrid", "bm25", "dense"]
RETRIEVERS = ("bm25", "dense", "hybrid")
CANDIDATES = 50  # each retriever's list depth before fusion
# A question the embedder reads whole: multilingual-e5 reads 512 tokens, and its
# sentencepiece vocabulary spends at most one token per character (plus one for the
# start of the text), so 500 characters, the "query: " prefix and the two special
# tokens fit. A longer question would be cut without a word.
MAX_QUESTION_CHARS = 500


def check_query(query: str, k: int | None = None) -> None:
    """InvalidInput for an empty or whitespace-only question, one over MAX_QUESTION_CHARS,
    or a `k` below 1 (the CLI shows it and exits 2)."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("質問が空です。調べたいことを書いてください (例: rag ask \"Ollamaの既定のポートは？\")。")
    if len(query) > MAX_QUESTION_CHARS:
        raise InvalidInput(
            f"質問が長すぎます: {len(query)} 文字 (上限 {MAX_QUESTION_CHARS} 文字)。"
            "埋め込みモデルが読めるのは 512 トークンまでです。要点を短く書いてください。"
        )
    if k is not None and k < 1:
        raise InvalidInput(f"返す件数 (-k) は 1 以上にしてください: {k}")


@dataclass(frozen=True)
class SparseResult:
    hits: list[ScoredChunk]
    ceiling: float  # the query's BM25 upper bound (0 when no token is in the index)


def sparse_search(index: IndexSnapshot, query: str, k: int, tokens: list[str] | None = None) -> SparseResult:
    """BM25 top-k over the live chunks, with the query's score ceiling."""
    tokens = bm25_tokens(index.analyzer, query) if tokens is None else tokens
    chunks = index.chunks
    hits = [
        ScoredChunk(chunks[h.chunk_id], h.score)
        for h in index.bm25.search(tokens, k)
        if h.chunk_id in chunks
    ]
    return SparseResult(hits, index.bm25.upper_bound(tokens) if hits else 0.0)


@dataclass(frozen=True)
class Retrieval:
    """One question's retrieval: the chosen ranking and each retriever's own list."""

    hits: list[ScoredChunk]  # the `k` best under the chosen retriever
    sparse: list[ScoredChunk]  # BM25, best first, `max(k, CANDIDATES)` deep
    dense: list[ScoredChunk]  # the embedder, best first, as deep


def retrieve(
    index: IndexSnapshot,
    query: str,
    k: int = 5,
    retriever: RetrieverName = "hybrid",
    fusion: str | None = None,
) -> Retrieval:
    """Both retrievers run once each; `hits` ranks them as `search(..., retriever)` would."""
    check_query(query, k)
    if retriever not in RETRIEVERS:
        raise ValueError(f"unknown retriever {retriever!r}: choose bm25, dense or hybrid")
    n = max(k, CANDIDATES)
    tokens = bm25_tokens(index.analyzer, query)
    sparse = sparse_search(index, query, n, tokens)
    dense = index.dense(query, n)
    if retriever == "bm25":
        hits = sparse.hits[:k]
    elif retriever == "dense":
        hits = dense[:k]
    else:
        hits = _fused(index, query, tokens, sparse, dense, n, fusion)[:k]
    return Retrieval(hits, sparse.hits, dense)


def _fused(
    index: IndexSnapshot,
    query: str,
    tokens: list[str],
    sparse: SparseResult,
    dense: list[ScoredChunk],
    n: int,
    fusion: str | None,
) -> list[ScoredChunk]:
    method = fusion or index.settings.fusion
    chunks = {sc.chunk.id: sc.chunk for sc in (*sparse.hits, *dense)}
    fused = fuse(
        method,
        [(sc.chunk.id, sc.score) for sc in sparse.hits],
        [(sc.chunk.id, sc.score) for sc in dense],
        sparse_ceiling=sparse.ceiling,
        depth=n,
    )
    hits = [ScoredChunk(chunks[cid], score) for cid, score in fused[:n]]
    if index.settings.follow_links:
        hits = follow_links(index, query, tokens, hits)
    return hits


def search(
    index: IndexSnapshot,
    query: str,
    k: int = 5,
    retriever: RetrieverName = "hybrid",
    fusion: str | None = None,
) -> list[ScoredChunk]:
    """The `k` best chunks. `fusion` names a rule in `fusion.FUSIONS` (default: settings.fusion).

    BM25 alone never loads the embedder, and dense alone never tokenizes for BM25.
    """
    check_query(query, k)
    if retriever == "bm25":
        return sparse_search(index, query, k).hits
    if retriever == "dense":
        return index.dense(query, k)
    return retrieve(index, query, k, retriever, fusion).hits
