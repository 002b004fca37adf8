"""The index directory on disk and its manifest, the single source of truth.

    INDEX_DIR/
      manifest.json          documents -> content hash, chunk IDs; points at a snapshot
      snapshots/gen-N/       chunks.jsonl (live chunks) + BM25 files, immutable once written
      chunks/xx/KEY.json     per document version: its chunks and BM25 tokens (content-addressed)
      chroma/                dense vectors (embedded Chroma); may hold extra, non-live vectors
      last_run.json          summary of the last ingest
      .lock                  held by a running ingest

A reader loads the manifest once and only ever uses chunks it lists, so an ingest in
progress (whose new vectors are in Chroma but not yet in the manifest) is invisible,
and a killed ingest leaves the previous manifest, and so the previous index, intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.documents import Chunk, StoredDocument

MANIFEST = "manifest.json"
LAST_RUN = "last_run.json"
IN_PROGRESS = ".ingest-in-progress"
LOCK = ".lock"
FORMAT_VERSION = 1


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1))


@dataclass
class DocEntry:
    hash: str
    size: int
    mtime_ns: int
    title: str
    format: str
    encoding: str
    chunk_file: str  # relative to the index dir
    chunk_ids: list[str]
    chars: int
    tokens: int  # embedder tokens over all chunks (overlap counted once per chunk)
    indexed_at: float


@dataclass
class Manifest:
    generation: int = 0
    fingerprint: dict = field(default_factory=dict)  # settings that shape chunks and vectors
    documents: dict[str, DocEntry] = field(default_factory=dict)
    snapshot: str | None = None  # relative dir of the live snapshot
    format_version: int = FORMAT_VERSION

    @classmethod
    def load(cls, index_dir: Path) -> "Manifest | None":
        path = index_dir / MANIFEST
        if not path.exists():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        docs = {p: DocEntry(**d) for p, d in raw.get("documents", {}).items()}
        return cls(
            generation=raw["generation"],
            fingerprint=raw.get("fingerprint", {}),
            documents=docs,
            snapshot=raw.get("snapshot"),
            format_version=raw.get("format_version", FORMAT_VERSION),
        )

    def save(self, index_dir: Path) -> None:
        obj = asdict(self)
        write_json(index_dir / MANIFEST, obj)

    def live_ids(self) -> set[str]:
        return {cid for d in self.documents.values() for cid in d.chunk_ids}


def chunk_to_record(chunk: Chunk) -> dict:
    rec = asdict(chunk)
    rec["heading_path"] = list(chunk.heading_path)
    return rec


def record_to_chunk(rec: dict) -> Chunk:
    return Chunk(**{**rec, "heading_path": tuple(rec.get("heading_path", ()))})


def read_chunk_file(index_dir: Path, rel: str) -> tuple[list[Chunk], list[list[str]], dict]:
    raw = json.loads((index_dir / rel).read_text(encoding="utf-8"))
    return [record_to_chunk(r) for r in raw["chunks"]], raw["tokens"], raw["document"]


def write_chunk_file(
    index_dir: Path, rel: str, chunks: list[Chunk], tokens: list[list[str]], document: StoredDocument
):
    write_json(
        index_dir / rel,
        {"document": asdict(document), "chunks": [chunk_to_record(c) for c in chunks], "tokens": tokens},
    )
