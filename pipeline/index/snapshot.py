"""Reading an index: the manifest's live chunks, their BM25 index and their vectors.

Each file is checked as it is first read (`IndexCorrupt` names it): snapshot files by
the stamps the manifest records for them (they are read whole anyway, so the sha256
costs a pass over bytes already in memory), their counts against the manifest, and
Chroma by its vector files' stamps and its vector count. Nothing is scanned beyond
what a search reads.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.documents import Chunk, ScoredChunk, StoredDocument
from pipeline.errors import IndexNotFound, RagError
from pipeline.index.manifest import (
    MANIFEST,
    Manifest,
    corrupt,
    ingest_running,
    json_problem,
    record_to_chunk,
    record_to_document,
    snapshot_generations,
    stamp_problem,
)

if TYPE_CHECKING:
    from pipeline.index.bm25 import BM25Index
    from pipeline.index.embedder import Embedder
    from pipeline.index.links import TitleIndex
    from pipeline.index.store import ChromaStore
    from pipeline.index.vectors import DenseVectors
    from pipeline.settings import Settings

CHUNKS_FILE = "chunks.jsonl"
DOCUMENTS_FILE = "documents.jsonl"
BM25_DIR = "bm25"


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
        self.manifest = self._newest(manifest)
        if not (self.index_dir / self.manifest.snapshot).is_dir():
            raise self._corrupt(self.index_dir / self.manifest.snapshot, "フォルダがありません (missing)")
        self._embedder = embedder
        self._store = store

    def _corrupt(self, path: Path, problem: str):
        return corrupt(self.index_dir, path, problem, self.manifest.roots or None)

    def _newest(self, manifest: Manifest) -> Manifest:
        """The manifest, unless a newer committed snapshot shows it was put back from an
        older generation (a restored backup, a sync tool). An ingest commits a snapshot
        and its manifest together, so with no ingest running they name the same one."""
        gens = snapshot_generations(self.index_dir)
        mine = int(manifest.snapshot.rsplit("-", 1)[1])
        if not gens or gens[-1] <= mine or ingest_running(self.index_dir):
            return manifest
        again = Manifest.load(self.index_dir)  # an ingest may have committed since the first read
        if again is not None and again.snapshot and int(again.snapshot.rsplit("-", 1)[1]) >= gens[-1]:
            return again
        if ingest_running(self.index_dir):
            return manifest
        raise corrupt(
            self.index_dir, self.index_dir / MANIFEST,
            f"古い世代 {mine} を指しています。新しい世代 {gens[-1]} のスナップショットがあります (stale manifest)",
            manifest.roots or None,
        )

    def _read_snapshot_file(self, name: str) -> bytes:
        """A snapshot file's bytes, checked against the manifest's stamp for it."""
        path = self.index_dir / self.manifest.snapshot / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise self._corrupt(path, "ファイルがありません (missing)") from None
        except OSError as err:
            raise self._corrupt(path, f"読めません ({err.strerror or err})") from err
        stamp = self.manifest.snapshot_files.get(name)
        if stamp is not None:
            problem = stamp_problem(path, stamp, data=data)
            if problem:
                raise self._corrupt(path, problem)
        return data

    def _read_jsonl(self, name: str, parse) -> list:
        data = self._read_snapshot_file(name)
        try:
            return [parse(json.loads(line)) for line in data.decode("utf-8").splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise self._corrupt(self.index_dir / self.manifest.snapshot / name, json_problem(err, data)) from err
        except (ValueError, TypeError) as err:
            raise self._corrupt(self.index_dir / self.manifest.snapshot / name, f"中身の形が違います: {err}") from err

    @cached_property
    def chunks(self) -> dict[str, Chunk]:
        """Live chunks by ID, in (path, offset) order."""
        out = {c.id: c for c in self._read_jsonl(CHUNKS_FILE, record_to_chunk)}
        if len(out) != self.manifest.chunk_count():
            raise self._corrupt(
                self.index_dir / self.manifest.snapshot / CHUNKS_FILE,
                f"チャンクが {len(out)} 個、マニフェストには {self.manifest.chunk_count()} 個",
            )
        return out

    @cached_property
    def documents(self) -> dict[str, StoredDocument]:
        """Indexed document bodies by path, in path order (stable for packing)."""
        out = {d.path: d for d in self._read_jsonl(DOCUMENTS_FILE, record_to_document)}
        if out.keys() != self.manifest.documents.keys():
            raise self._corrupt(
                self.index_dir / self.manifest.snapshot / DOCUMENTS_FILE,
                f"文書が {len(out)} 件、マニフェストとは別の組です (マニフェストには {len(self.manifest.documents)} 件)",
            )
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

        directory = self.index_dir / self.manifest.snapshot / BM25_DIR
        for name, stamp in self.manifest.snapshot_files.items():
            if name.startswith(BM25_DIR + "/"):
                problem = stamp_problem(self.index_dir / self.manifest.snapshot / name, stamp)
                if problem:
                    raise self._corrupt(self.index_dir / self.manifest.snapshot / name, problem)
        try:
            index = BM25Index.load(directory)
        except Exception as err:  # bm25s/numpy/json raise many kinds on damaged files
            raise self._corrupt(directory, f"BM25 を読めません: {type(err).__name__}: {err}") from err
        problem = index.shape_problem(self.manifest.chunk_count())
        if problem:
            raise self._corrupt(directory, problem)
        return index

    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            from pipeline.index.embedder import load_embedder, settings_for_index

            # Questions are embedded as the index's vectors were (its model and precision).
            settings = settings_for_index(self.settings, self.manifest.fingerprint.get("embed_model"))
            self._embedder = load_embedder(settings)
        return self._embedder

    @property
    def store(self) -> "ChromaStore":
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _open_store(self) -> "ChromaStore":
        """Chroma, checked before it loads its files (skipped while an ingest writes them),
        then its vector count against the live chunks."""
        from pipeline.index.store import CHROMA_DIR, ChromaStore, chroma_problem

        chroma = self.index_dir / CHROMA_DIR
        local = not self.settings.chroma_host
        running = ingest_running(self.index_dir)
        if local and not running:
            problem = chroma_problem(self.index_dir, self.manifest.chroma_files, self.manifest.chroma_seq)
            if problem:
                raise self._corrupt(*problem)
        try:
            store = ChromaStore(self.settings, self.index_dir)
            count = store.count()
        except RagError:
            raise
        except Exception as err:  # chromadb raises its own errors on a damaged database
            raise self._corrupt(chroma, f"Chroma を開けません: {err}") from err
        live = self.manifest.chunk_count()
        # Extra vectors are normal while an ingest adds (or a server collection is shared).
        if count < live or (count > live and local and not running):
            raise self._corrupt(chroma, f"ベクトルが {count} 件、マニフェストのチャンクは {live} 件")
        return store

    @cached_property
    def analyzer(self):
        from pipeline.japanese import default_analyzer

        return default_analyzer()

    @cached_property
    def vectors(self) -> "DenseVectors | None":
        """The snapshot's copy of its chunks' vectors (`pipeline.index.vectors`), checked like
        BM25; None for a snapshot written before ingest made one (Chroma is searched then)."""
        from pipeline.index.vectors import VECTORS_FILE, DenseVectors

        path = self.index_dir / self.manifest.snapshot / VECTORS_FILE
        stamp = self.manifest.snapshot_files.get(VECTORS_FILE)
        if stamp is None and not path.exists():
            return None
        problem = stamp_problem(path, stamp) if stamp is not None else None
        if problem:
            raise self._corrupt(path, problem)
        try:
            return DenseVectors.load(path, list(self.chunks))
        except Exception as err:  # numpy raises many kinds on a damaged file
            raise self._corrupt(path, f"ベクトルを読めません: {type(err).__name__}: {err}") from err

    def dense(self, query: str, k: int) -> list[ScoredChunk]:
        vector = self.embedder.embed_query(query)
        if self.vectors is not None:
            return [ScoredChunk(self.chunks[h.chunk_id], h.score) for h in self.vectors.search(vector, k)]
        store = self.store
        try:
            hits = store.query(vector, k, allowed=set(self.chunks))
        except RagError:
            raise
        except Exception as err:  # a damaged HNSW index fails at the first query
            from pipeline.index.store import CHROMA_DIR

            raise self._corrupt(self.index_dir / CHROMA_DIR, f"Chroma で検索できません: {err}") from err
        return [ScoredChunk(self.chunks[h.chunk_id], h.score) for h in hits]

    def sparse(self, query: str, k: int) -> list[ScoredChunk]:
        from pipeline.index.bm25 import bm25_tokens

        hits = self.bm25.search(bm25_tokens(self.analyzer, query), k)
        return [ScoredChunk(self.chunks[h.chunk_id], h.score) for h in hits if h.chunk_id in self.chunks]


def open_index(settings: "Settings", index_dir: Path | str | None = None, **kw) -> IndexSnapshot:
    return IndexSnapshot(settings, Path(index_dir or settings.index_dir), **kw)
