"""A snapshot's dense vectors as one array: exact cosine top-k with numpy, no Chroma to open.

Chroma stays the store `rag ingest` writes (a llama-index user opens it with
`ChromaVectorStore`). When ingest writes a snapshot it also copies the live chunks'
vectors out of Chroma into `vectors.npy` (float32, unit rows, in `chunks.jsonl` order),
next to the BM25 arrays, and readers search that copy:

- a one-shot `rag search` does not import and open Chroma, which cost 0.5-0.7 s and
  50 MB of its 1.6 s and 360 MB (demo index, 2-core VM, embedder already on ONNX);
- the search is exact (recall 1.0; Chroma's HNSW is approximate), 10,000 x 384 in about
  a millisecond;
- a search never touches Chroma's files, which Chroma may rewrite when it opens them.

A snapshot written before this file existed has no copy: its readers still query Chroma.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from pipeline.index.store import ChromaStore, DenseHit

VECTORS_FILE = "vectors.npy"
FETCH_BATCH = 1000  # ids per Chroma `get`


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), float32: cosine is then a dot product,
    as in Chroma's cosine space."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1).astype(np.float32)


def write_vectors(directory: Path, ids: Sequence[str], store: "ChromaStore") -> None:
    """Copy the vectors of `ids` (in that order) from Chroma into `directory/vectors.npy`."""
    by_id: dict[str, np.ndarray] = {}
    for i in range(0, len(ids), FETCH_BATCH):
        got = store.collection.get(ids=list(ids[i : i + FETCH_BATCH]), include=["embeddings"])
        by_id.update(zip(got["ids"], got["embeddings"]))
    missing = [cid for cid in ids if cid not in by_id]
    if missing:
        raise RuntimeError(f"{len(missing)} chunk vectors are not in Chroma (first: {missing[0]})")
    dim = len(next(iter(by_id.values()))) if by_id else 0
    matrix = np.stack([np.asarray(by_id[cid], np.float32) for cid in ids]) if ids else np.zeros((0, dim), np.float32)
    np.save(Path(directory) / VECTORS_FILE, unit_rows(matrix))


class DenseVectors:
    """Unit vectors of a snapshot's chunks; `search` ranks them by cosine to a question."""

    def __init__(self, ids: list[str], matrix: np.ndarray):
        if len(ids) != len(matrix):
            raise ValueError(f"{len(matrix)} vectors for {len(ids)} chunks")
        self.ids = ids
        self.matrix = matrix

    @classmethod
    def load(cls, path: Path, ids: list[str]) -> "DenseVectors":
        matrix = np.load(path, mmap_mode="r")
        if matrix.dtype != np.float32 or matrix.ndim != 2:
            raise ValueError(f"{matrix.dtype} array of {matrix.ndim} dimensions, expected float32 rows")
        return cls(ids, matrix)

    def search(self, vector: Sequence[float], k: int) -> list["DenseHit"]:
        """Top-k by cosine, best first (ties in chunk order)."""
        from pipeline.index.store import DenseHit

        n = len(self.ids)
        if n == 0 or k <= 0:
            return []
        query = unit_rows(np.asarray(vector, np.float32)[None, :])[0]
        if query.shape[0] != self.matrix.shape[1]:
            raise ValueError(f"question vector has {query.shape[0]} dimensions, the index {self.matrix.shape[1]}")
        scores = self.matrix @ query
        k = min(k, n)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.lexsort((top, -scores[top]))]
        return [DenseHit(self.ids[i], float(scores[i])) for i in top.tolist()]
