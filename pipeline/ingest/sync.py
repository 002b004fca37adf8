"""Incremental, idempotent ingestion: only new and changed files are chunked and embedded.

Order of work, chosen so that a SIGKILL at any point leaves a usable index:
1. chunk files and vectors of new versions are written (not yet live);
2. a new snapshot (chunks.jsonl + BM25) is written to a fresh directory;
3. the manifest is replaced atomically — this is the commit point;
4. vectors and files no longer referenced are removed.
A run that finds the in-progress marker of a killed run also sweeps its orphans.

Tests kill a run at named stages through `_fault_point` (env RAG_FAULT_AT="stage:n").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.documents import Chunk
from pipeline.errors import ConfigError, IndexLocked, ReadError
from pipeline.index.bm25 import TOKENS_VERSION, bm25_tokens
from pipeline.index.manifest import (
    IN_PROGRESS,
    LAST_RUN,
    LOCK,
    DocEntry,
    Manifest,
    StoredDocument,
    chunk_to_record,
    read_chunk_file,
    write_atomic,
    write_chunk_file,
    write_json,
)
from pipeline.ingest.scan import file_mtime, in_scope, scan

if TYPE_CHECKING:
    from pipeline.index.embedder import Embedder
    from pipeline.index.store import ChromaStore
    from pipeline.settings import Settings

CHUNKER_VERSION = 1
EMBED_BATCH = 64
# Vectors buffered across files, then written to Chroma at once: a write costs a roughly fixed
# amount whatever its size (500 writes of 3 cost 8x one of 1,500; benchmarks/results/ops.md).
# Not `store.CHROMA_BATCH`, which caps the records of one Chroma call within a write.
ADD_BATCH = 256
KEEP_SNAPSHOTS = 2
SNAPSHOT_GRACE_S = 600  # a superseded snapshot stays this long for readers that opened it
DEFAULT_MAX_FILE_MB = 20


class Reporter(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, path: str) -> None: ...
    def log(self, message: str) -> None: ...


class SilentReporter:
    def start(self, total: int) -> None: ...
    def advance(self, path: str) -> None: ...
    def log(self, message: str) -> None: ...


@dataclass
class IngestSummary:
    index_dir: str
    added: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: list[dict] = field(default_factory=list)  # {path, reason}
    warnings: list[dict] = field(default_factory=list)  # {path, warning}: indexed, but lossy
    embedded_chunks: int = 0
    removed_chunks: int = 0
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    roots: list[str] = field(default_factory=list)
    added_paths: list[str] = field(default_factory=list)
    changed_paths: list[str] = field(default_factory=list)
    deleted_paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def fingerprint(settings: "Settings") -> dict:
    return {
        "embed_model": settings.embed_model,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap_sentences": settings.chunk_overlap_sentences,
        "chunker_version": CHUNKER_VERSION,
        "bm25_tokens": TOKENS_VERSION,  # stored chunk tokens must match how queries are tokenized
    }


def chunk_file_for(path: str, doc_hash: str, fp: dict) -> str:
    key = hashlib.sha256(
        f"{path}\0{doc_hash}\0{json.dumps(fp, sort_keys=True)}".encode()
    ).hexdigest()
    return f"chunks/{key[:2]}/{key}.json"


class Ingestor:
    """Brings one index directory in step with a set of files and folders."""

    def __init__(
        self,
        settings: "Settings",
        index_dir: Path,
        embedder: "Embedder | None" = None,
        store: "ChromaStore | None" = None,
    ):
        self.settings = settings
        self.index_dir = Path(index_dir)
        self._embedder = embedder
        self._store = store
        self._chunker = None
        self._analyzer = None
        self._pending: list[tuple[Chunk, object]] = []  # embedded, not yet written to Chroma

    # Heavy pieces are built only when a file actually needs work.
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

    @property
    def chunker(self):
        if self._chunker is None:
            from pipeline.ingest.chunker import JapaneseChunker

            self._chunker = JapaneseChunker(
                chunk_tokens=self.settings.chunk_tokens,
                overlap_sentences=self.settings.chunk_overlap_sentences,
                token_counter=self.embedder.count_tokens,
            )
        return self._chunker

    @property
    def analyzer(self):
        if self._analyzer is None:
            from pipeline.japanese import default_analyzer

            self._analyzer = default_analyzer()
        return self._analyzer

    def run(
        self, paths: list[Path], reporter: Reporter | None = None, wait: float = 0.0
    ) -> IngestSummary:
        from filelock import FileLock, Timeout

        self.index_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.index_dir / LOCK))
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise IndexLocked(str(self.index_dir)) from None
        try:
            return self._run_locked(paths, reporter or SilentReporter())
        finally:
            lock.release()

    def _run_locked(self, paths: list[Path], reporter: Reporter) -> IngestSummary:
        t0 = time.time()
        summary = IngestSummary(index_dir=str(self.index_dir), started_at=t0)
        self._pending = []
        fp = fingerprint(self.settings)
        old = Manifest.load(self.index_dir) or Manifest(fingerprint=fp)
        if old.documents and old.fingerprint.get("embed_model") != fp["embed_model"]:
            raise ConfigError(
                f"このインデックスは別の埋め込みモデル ({old.fingerprint.get('embed_model')}) で"
                f"作られています: {self.index_dir}\n"
                "別の --index を指定するか、フォルダを削除して作り直してください。"
            )
        recovering = (self.index_dir / IN_PROGRESS).exists()

        found = scan(paths)
        summary.roots = [str(r) for r in found.roots]
        summary.skipped = [{"path": p, "reason": r} for p, r in found.skipped]
        docs: dict[str, DocEntry] = dict(old.documents)
        todo: list[tuple[Path, os.stat_result]] = []
        seen: set[str] = set()
        max_mb = self.settings.max_file_mb
        for f in found.files:
            key = str(f)
            seen.add(key)
            entry = old.documents.get(key)
            try:
                st = f.stat()
            except OSError as err:
                summary.skipped.append({"path": key, "reason": _os_reason(err)})
                continue
            same_fp = old.fingerprint == fp
            if entry and same_fp and entry.size == st.st_size and entry.mtime_ns == st.st_mtime_ns:
                summary.unchanged += 1
                continue
            if max_mb and st.st_size > max_mb * 1_000_000:
                summary.skipped.append({"path": key, "reason": _too_big(st.st_size, max_mb)})
                continue
            todo.append((f, st))

        deleted = [
            p for p in old.documents if in_scope(p, found.roots) and p not in seen
        ]
        for p in deleted:
            docs.pop(p)
        summary.deleted = len(deleted)
        summary.deleted_paths = deleted

        if todo or deleted:
            write_atomic(self.index_dir / IN_PROGRESS, str(os.getpid()))
            _fault_point("after_marker")
        reporter.start(len(todo))
        for f, st in todo:
            key = str(f)
            entry = old.documents.get(key)
            try:
                new_entry = self._index_file(f, st, entry, fp, summary)
            except ReadError as err:
                summary.skipped.append({"path": key, "reason": err.reason})
                reporter.log(f"skip {key}: {err.reason}")
            else:
                if new_entry is None:  # same bytes, only the mtime moved
                    summary.unchanged += 1
                    docs[key] = _touched(entry, st)
                else:
                    docs[key] = new_entry
                    if entry is None:
                        summary.added += 1
                        summary.added_paths.append(key)
                    else:
                        summary.changed += 1
                        summary.changed_paths.append(key)
            reporter.advance(key)
        self._flush_vectors()

        changed = bool(summary.added or summary.changed or summary.deleted)
        new = Manifest(
            generation=old.generation + (1 if changed else 0),
            fingerprint=fp,
            documents=dict(sorted(docs.items())),
            snapshot=old.snapshot,
        )
        if changed or old.snapshot is None or old.fingerprint != fp:
            new.generation = old.generation + 1
            new.snapshot = self._write_snapshot(new)
            _fault_point("before_manifest")
        if new.documents != old.documents or new.snapshot != old.snapshot:
            new.save(self.index_dir)  # commit point
            _fault_point("after_manifest")

        if changed or recovering:
            summary.removed_chunks = self._sweep(new, old, full=recovering)
            _fault_point("after_sweep")
        (self.index_dir / IN_PROGRESS).unlink(missing_ok=True)

        summary.documents = len(new.documents)
        summary.chunks = sum(len(d.chunk_ids) for d in new.documents.values())
        summary.finished_at = time.time()
        summary.seconds = round(summary.finished_at - t0, 3)
        write_json(self.index_dir / LAST_RUN, summary.to_dict())
        return summary

    def _index_file(
        self, f: Path, st: os.stat_result, entry: DocEntry | None, fp: dict, summary: IngestSummary
    ) -> DocEntry | None:
        from pipeline.documents import embed_header
        from pipeline.ingest.readers import read_document

        doc = read_document(f)
        if doc.metadata.get("warning"):
            summary.warnings.append({"path": doc.path, "warning": doc.metadata["warning"]})
        if entry and entry.hash == doc.content_hash and entry.chunk_file == chunk_file_for(
            doc.path, doc.content_hash, fp
        ):
            return None
        rel = chunk_file_for(doc.path, doc.content_hash, fp)
        try:
            chunks = self.chunker.chunk_document(doc)
        except ValueError as err:
            raise ReadError(doc.path, str(err)) from err
        if not chunks:
            raise ReadError(doc.path, "本文がありません (no text to index)")
        texts = [embed_header(c.title, c.heading_path) + "\n" + c.text for c in chunks]
        if not (self.index_dir / rel).exists():
            tokens = [bm25_tokens(self.analyzer, t) for t in texts]
            stored = StoredDocument(
                path=doc.path,
                title=doc.title,
                text=doc.text[doc.body_start :],
                body_start=doc.body_start,
                first_line=doc.line_of(doc.body_start),
                hash=doc.content_hash,
            )
            write_chunk_file(self.index_dir, rel, chunks, tokens, stored)
            _fault_point("after_chunk_file")
        summary.embedded_chunks += self._embed_missing(chunks, texts)
        return DocEntry(
            hash=doc.content_hash,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            title=doc.title,
            format=doc.format,
            encoding=doc.encoding,
            chunk_file=rel,
            chunk_ids=[c.id for c in chunks],
            chars=len(doc.text) - doc.body_start,
            tokens=sum(c.token_count for c in chunks),
            indexed_at=time.time(),
        )

    def _embed_missing(self, chunks: list[Chunk], texts: list[str]) -> int:
        """Embed only chunks whose vectors are not in Chroma yet (a killed run's work is kept,
        up to the last ADD_BATCH vectors, which are written to Chroma together)."""
        have = self.store.existing([c.id for c in chunks])
        todo = [(c, t) for c, t in zip(chunks, texts) if c.id not in have]
        for i in range(0, len(todo), EMBED_BATCH):
            batch = todo[i : i + EMBED_BATCH]
            vectors = self.embedder.embed_passages([t for _, t in batch])
            self._pending.extend(zip([c for c, _ in batch], vectors))
        if len(self._pending) >= ADD_BATCH:
            self._flush_vectors()
        return len(todo)

    def _flush_vectors(self) -> None:
        if self._pending:
            self.store.add([c for c, _ in self._pending], [v for _, v in self._pending])
            self._pending = []
            _fault_point("after_chroma_add")

    def _write_snapshot(self, manifest: Manifest) -> str:
        """chunks.jsonl + BM25 of every live chunk, in a new directory."""
        from pipeline.index.bm25 import BM25Index

        rel = f"snapshots/gen-{manifest.generation:06d}"
        final = self.index_dir / rel
        tmp = self.index_dir / f"snapshots/.tmp-gen-{manifest.generation:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        ids: list[str] = []
        all_tokens: list[list[str]] = []
        lines: list[str] = []
        doc_lines: list[str] = []
        for entry in manifest.documents.values():
            chunks, tokens, document = read_chunk_file(self.index_dir, entry.chunk_file)
            doc_lines.append(json.dumps(document, ensure_ascii=False))
            for c, t in zip(chunks, tokens):
                ids.append(c.id)
                all_tokens.append(t)
                lines.append(json.dumps(chunk_to_record(c), ensure_ascii=False))
        (tmp / "chunks.jsonl").write_text("".join(x + "\n" for x in lines), "utf-8")
        (tmp / "documents.jsonl").write_text("".join(x + "\n" for x in doc_lines), "utf-8")
        BM25Index.build(ids, all_tokens).save(tmp / "bm25")
        _fault_point("before_snapshot_rename")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return rel

    def _sweep(self, new: Manifest, old: Manifest, full: bool) -> int:
        """Remove vectors, chunk files and snapshots that no manifest we keep refers to."""
        live = new.live_ids()
        if full:
            stale = self.store.all_ids() - live
        else:
            stale = old.live_ids() - live
        self.store.delete(stale)
        _fault_point("during_sweep")
        keep_files = {d.chunk_file for d in new.documents.values()}
        for f in (self.index_dir / "chunks").glob("*/*.json"):
            if str(f.relative_to(self.index_dir)) not in keep_files:
                f.unlink(missing_ok=True)
        # Half-written files of a killed write_atomic (we hold the lock: none is ours).
        for t in [*self.index_dir.glob(".*.tmp"), *self.index_dir.glob("chunks/*/.*.tmp")]:
            t.unlink(missing_ok=True)
        snaps = sorted((self.index_dir / "snapshots").glob("gen-*"))
        keep = {new.snapshot, old.snapshot}
        now = time.time()
        for s, successor in zip(snaps[:-KEEP_SNAPSHOTS], snaps[1:]):
            # A reader that loaded an older manifest may still be reading this snapshot.
            recent = now - file_mtime(successor) < SNAPSHOT_GRACE_S
            if str(s.relative_to(self.index_dir)) not in keep and not recent:
                shutil.rmtree(s, ignore_errors=True)
        for t in (self.index_dir / "snapshots").glob(".tmp-*"):
            shutil.rmtree(t, ignore_errors=True)
        return len(stale)


def _touched(entry: DocEntry, st: os.stat_result) -> DocEntry:
    return DocEntry(**{**asdict(entry), "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def _os_reason(err: OSError) -> str:
    from pipeline.ingest import readers

    known = {errno.ENOENT: readers.NOT_FOUND, errno.ELOOP: readers.SYMLINK_LOOP,
             errno.EACCES: readers.NO_PERMISSION}
    return known.get(err.errno) or f"{type(err).__name__}: {err.strerror or err}"


def _too_big(size: int, max_mb: float) -> str:
    return (
        f"ファイルが大きすぎます: {size / 1e6:.1f} MB > 上限 {max_mb:g} MB "
        f"(file too large; raise the setting max_file_mb to index it)"
    )


_fault_hits: dict[str, int] = {}


def _fault_point(name: str) -> None:
    """Test hook, a no-op unless RAG_FAULT_AT="stage:n": SIGKILL at the n-th pass of `stage`."""
    spec = os.environ.get("RAG_FAULT_AT")
    if not spec:
        return
    stage, _, n = spec.partition(":")
    if stage == name:
        _fault_hits[name] = _fault_hits.get(name, 0) + 1
        if _fault_hits[name] >= int(n or 1):
            os.kill(os.getpid(), signal.SIGKILL)
