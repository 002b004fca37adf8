"""Dense vectors in Chroma: embedded `PersistentClient` by default, a server when configured.

Records are written and deleted through llama-index's `ChromaVectorStore`, so a
llama-index user can open the same collection with `VectorStoreIndex.from_vector_store`
(tests/test_llama_index.py does). Vectors are always passed in: Chroma's default
embedding function would download a model.

Reads stay on the raw collection, because they need IDs and distances only:
`ChromaVectorStore.query` fetches and parses every hit's text and metadata (4.2 ms ->
11.0 ms for 50 candidates out of 10,000 chunks, embedded Chroma, 2 cores), and the
reader already holds each chunk from the snapshot. The membership checks (`existing`,
`all_ids`) ask for no payload at all, which `get_nodes` cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from pipeline.documents import Chunk
from pipeline.errors import BackendUnavailable

if TYPE_CHECKING:
    from pipeline.settings import Settings

# Records per Chroma call: `ChromaVectorStore.add` splits at 41,665, above the
# embedded client's own limit (`max_batch_size`, 5,461 in chromadb 1.5.9).
CHROMA_BATCH = 1000


@dataclass(frozen=True)
class DenseHit:
    chunk_id: str
    score: float  # cosine similarity


def chroma_client(settings: "Settings", index_dir: Path):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        try:
            return chromadb.HttpClient(
                host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings
            )
        except Exception as err:  # chromadb raises ValueError/ConnectionError variants
            raise BackendUnavailable(
                f"Chroma サーバーに接続できません: {settings.chroma_host}:{settings.chroma_port} ({err})\n"
                "サーバーを起動するか、設定 chroma_host を外して組み込みの Chroma を使ってください。"
            ) from err
    return chromadb.PersistentClient(path=str(index_dir / "chroma"), settings=chroma_settings)


class ChromaStore:
    """One Chroma collection holding chunk vectors, keyed by chunk ID."""

    def __init__(self, settings: "Settings", index_dir: Path, collection: str | None = None):
        self.settings = settings
        self.client = chroma_client(settings, index_dir)
        self.name = collection or settings.chroma_collection
        self.collection = self.client.get_or_create_collection(
            name=self.name,
            embedding_function=None,
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "ef_construction": settings.hnsw_ef_construction,
                    "ef_search": settings.hnsw_ef_search,
                    "max_neighbors": settings.hnsw_m,
                }
            },
        )

    @cached_property
    def vector_store(self):
        """The collection as a llama-index `ChromaVectorStore` (what we write through)."""
        from llama_index.vector_stores.chroma import ChromaVectorStore

        return ChromaVectorStore(chroma_collection=self.collection)

    def count(self) -> int:
        return self.collection.count()

    def all_ids(self) -> set[str]:
        ids: set[str] = set()
        offset, page = 0, 5000
        while True:
            got = self.collection.get(include=[], limit=page, offset=offset)["ids"]
            ids.update(got)
            if len(got) < page:
                return ids
            offset += page

    def existing(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        return set(self.collection.get(ids=list(ids), include=[])["ids"])

    def add(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        from pipeline.nodes import chunk_to_node

        nodes = []
        for chunk, vector in zip(chunks, vectors, strict=True):
            node = chunk_to_node(chunk)
            node.embedding = [float(x) for x in vector]
            nodes.append(node)
        for i in range(0, len(nodes), CHROMA_BATCH):
            self.vector_store.add(nodes[i : i + CHROMA_BATCH])

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for i in range(0, len(ids), CHROMA_BATCH):
            self.vector_store.delete_nodes(node_ids=ids[i : i + CHROMA_BATCH])

    def query(
        self, vector: Sequence[float], k: int, allowed: set[str] | None = None
    ) -> list[DenseHit]:
        """Top-k by cosine; chunks outside `allowed` (not in the live manifest) are skipped."""
        total = self.count()
        if total == 0 or k <= 0:
            return []
        n = min(total, k if allowed is None else k + max(16, total - len(allowed)))
        res = self.collection.query(
            query_embeddings=[[float(x) for x in vector]], n_results=n, include=["distances"]
        )
        hits = [
            DenseHit(cid, 1.0 - float(dist))
            for cid, dist in zip(res["ids"][0], res["distances"][0])
            if allowed is None or cid in allowed
        ]
        return hits[:k]
