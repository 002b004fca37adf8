"""One embedder for all of evaluation: loads its model on first use, caches passage vectors.

`rag eval retrieval` re-indexes corpora and the checker's `refit` re-reads the same
claims and paragraphs run after run; both embed through `CachingEmbedder`, whose
passage vectors persist in one SQLite file (`VectorCache`, keyed by model, prefix and
text, so models never mix) under ``settings.cache_dir / "eval"``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from pipeline.index.embedder import Embedder
    from pipeline.settings import Settings

__all__ = ["CachingEmbedder", "VECTOR_CACHE", "VectorCache", "open_vector_cache"]

VECTOR_CACHE = "vectors.sqlite3"
# Texts per embedder call when warming the cache: large enough to keep the model busy,
# small enough that an interrupted run keeps most of its work.
WARM_BATCH = 256


class VectorCache:
    """Passage vectors by sha256(model, prefix, text) in one SQLite file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB)")

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            part = list(keys[i : i + 500])
            rows = self.db.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})", part
            )
            out.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return out

    def put(self, items: dict[str, np.ndarray]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
            [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
        )
        self.db.commit()


def open_vector_cache(settings: "Settings") -> VectorCache:
    """The evaluation's vector cache under ``settings.cache_dir / "eval"``."""
    return VectorCache(Path(settings.cache_dir) / "eval" / VECTOR_CACHE)


class CachingEmbedder:
    """An Embedder whose model loads on first use and whose passage vectors are cached.

    Query vectors are kept for the run (the same question is asked of dense and hybrid)
    together with the time the model took; a reused vector adds that time to
    `replayed_s`, so measured latencies still include one embedding per question.
    `inner` replaces the settings' model (tests).
    """

    def __init__(self, settings: "Settings", cache: VectorCache | None, inner: "Embedder | None" = None):
        self.settings = settings
        self.cache = cache
        self._inner = inner
        if inner is not None:
            self.name = inner.name
        else:
            from pipeline.index.embedder import embedding_name

            self.name = embedding_name(settings)
        self._queries: dict[str, tuple[np.ndarray, float]] = {}
        self.replayed_s = 0.0
        self.computed = 0  # passage vectors the model computed (not found in the cache)

    @property
    def inner(self) -> "Embedder":
        if self._inner is None:
            from pipeline.index.embedder import load_embedder

            self._inner = load_embedder(self.settings)
        return self._inner

    @property
    def dim(self) -> int:
        return self.inner.dim

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_query(self, text: str) -> np.ndarray:
        hit = self._queries.get(text)
        if hit is not None:
            self.replayed_s += hit[1]
            return hit[0]
        t0 = time.perf_counter()
        vector = self.inner.embed_query(text)
        self._queries[text] = (vector, time.perf_counter() - t0)
        return vector

    def _key(self, text: str) -> str:
        raw = f"{self.name}\0{self.settings.embed_passage_prefix}\0{text}"
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if self.cache is None:
            self.computed += len(texts)
            return self.inner.embed_passages(texts)
        keys = [self._key(t) for t in texts]
        have = self.cache.get(keys)
        todo = [i for i, k in enumerate(keys) if k not in have]
        if todo:
            fresh = self.inner.embed_passages([texts[i] for i in todo])
            self.computed += len(todo)
            new = {keys[i]: v for i, v in zip(todo, fresh)}
            self.cache.put(new)
            have.update(new)
        return np.stack([have[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def warm(self, texts: Iterable[str], batch: int = WARM_BATCH,
             progress: Callable[[int, int], None] | None = None) -> None:
        """Embed the texts not cached yet, `batch` at a time; `progress(done, total)` after each."""
        if self.cache is None:
            return
        unique = list(dict.fromkeys(texts))
        have = self.cache.get([self._key(t) for t in unique])
        todo = [t for t in unique if self._key(t) not in have]
        for i in range(0, len(todo), batch):
            self.embed_passages(todo[i:i + batch])
            if progress:
                progress(min(i + batch, len(todo)), len(todo))
