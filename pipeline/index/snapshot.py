"""Reading an index: the manifest's live chunks, their BM25 index and their vectors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.documents import Chunk, ScoredChunk, StoredDocument
from pipeline.errors import IndexNotFound
from pipeline.index.manifest import Manifest, record_to_chunk

if TYPE_CHECKING:
    from pipeline.index.bm25 import BM25Index
    from pipeline.index.embedder import Embedder
    from pipeline.index.links import TitleIndex
    from pipeline.index.store import ChromaStore
    from pipeline.settings import Settings


class IndexSnapshot:
    """One consistent generation of an index, as a reader sees it."""

    def __init__(
        self,
        settings: "Settings",
        index_dir: Path,
        embedder: "Embedder | None" = None,
        store: "ChromaStore | None" = None,
    ):
        self.settings = settings
        self.index_dir = Path(index_dir)
        manifest = Manifest.load(self.index_dir)
        if manifest is None or manifest.snapshot is None:
            raise IndexNotFound(str(self.index_dir))
        self.manifest = manifest
        self._embedder = embedder
        self._store = store

    @cached_property
    def chunks(self) -> dict[str, Chunk]:
        """Live chunks by ID, in (path, offset) order."""
        path = self.index_dir / self.manifest.snapshot / "chunks.jsonl"
        out: dict[str, Chunk] = {}
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    c = record_to_chunk(json.loads(line))
                    out[c.id] = c
        return out

    @cached_property
    def documents(self) -> dict[str, StoredDocument]:
        """Indexed document bodies by path, in path order (stable for packing)."""
        path = self.index_dir / self.manifest.snapshot / "documents.jsonl"
        out: dict[str, StoredDocument] = {}
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = StoredDocument(**json.loads(line))
                    out[d.path] = d
        return out

    @cached_property
    def title_index(self) -> "TitleIndex":
        from pipeline.index.links import TitleIndex

        return TitleIndex.build({path: d.title for path, d in self.documents.items()})

    @cached_property
    def _chunk_ids_by_path(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for cid, c in self.chunks.items():
            out.setdefault(c.path, []).append(cid)
        return out

    def chunk_ids_of(self, path: str) -> list[str]:
        return self._chunk_ids_by_path.get(path, [])

    @cached_property
    def bm25(self) -> "BM25Index":
        from pipeline.index.bm25 import BM25Index

        return BM25Index.load(self.index_dir / self.manifest.snapshot / "bm25")

    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            from pipeline.index.embedder import load_embedder

            self._embedder = load_embedder(self.settings)
        return self._embedder

    @property
    def store(self) -> "ChromaStore":
        if self._store is None:
            from pipeline.index.store import ChromaStore

            self._store = ChromaStore(self.settings, self.index_dir)
        return self._store

    @cached_property
    def analyzer(self):
        from pipeline.japanese import default_analyzer

        return default_analyzer()

    def dense(self, query: str, k: int) -> list[ScoredChunk]:
        vector = self.embedder.embed_query(query)
        hits = self.store.query(vector, k, allowed=set(self.chunks))
        return [ScoredChunk(self.chunks[h.chunk_id], h.score) for h in hits]

    def sparse(self, query: str, k: int) -> list[ScoredChunk]:
        from pipeline.index.bm25 import bm25_tokens

        hits = self.bm25.search(bm25_tokens(self.analyzer, query), k)
        return [ScoredChunk(self.chunks[h.chunk_id], h.score) for h in hits if h.chunk_id in self.chunks]


def open_index(settings: "Settings", index_dir: Path | str | None = None, **kw) -> IndexSnapshot:
    return IndexSnapshot(settings, Path(index_dir or settings.index_dir), **kw)
