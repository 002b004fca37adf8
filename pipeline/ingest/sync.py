"""Incremental, idempotent ingestion: only new and changed files are chunked and embedded.

Order of work, chosen so that a SIGKILL at any point leaves a usable index:
1. chunk files and vectors of new versions are written (not yet live);
2. a new snapshot (chunks.jsonl + BM25) is written to a fresh directory;
3. the manifest is replaced atomically — this is the commit point;
4. vectors and files no longer referenced are removed.
A run that finds the in-progress marker of a killed run also sweeps its orphans.

Before any of that, every file of the index is checked (`_check_index`): the notes are
the source of truth, so whatever is damaged is rebuilt from them. A damaged snapshot
is written again; a document whose chunk file is damaged, or whose vectors are missing
from Chroma, is indexed again (keeping the vectors Chroma still has for its chunks:
chunk IDs are content hashes); a Chroma that cannot be opened or whose vector files
changed is emptied and every document embedded again; an unreadable manifest means
every note is indexed again. The summary lists what was found (`repaired`).

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

from pipeline.documents import Chunk, StoredDocument
from pipeline.errors import ConfigError, DiskFull, IndexCorrupt, IndexLocked, RagError, ReadError
from pipeline.index.bm25 import TOKENS_VERSION, bm25_tokens
from pipeline.index.manifest import (
    IN_PROGRESS,
    LAST_RUN,
    LOCK,
    MANIFEST,
    SNAPSHOTS,
    DocEntry,
    Manifest,
    check_index_dir,
    chunk_file_mismatch,
    chunk_to_record,
    load_last_run,
    parse_chunk_file,
    read_chunk_file,
    snapshot_generations,
    stamp_of,
    stamp_problem,
    write_atomic,
    write_chunk_file,
    write_json,
)
from pipeline.index.snapshot import BM25_DIR, CHUNKS_FILE, DOCUMENTS_FILE
from pipeline.index.store import CHROMA_DIR
from pipeline.ingest.scan import file_mtime, in_scope, scan

if TYPE_CHECKING:
    from pipeline.index.embedder import Embedder
    from pipeline.index.store import ChromaStore
    from pipeline.settings import Settings

CHUNKER_VERSION = 1
# Chunks queued across files, then embedded in one call that sorts them by length: batches of
# like lengths pad less. Per file, the same 146 passages took 7.3 s against 6.2 s in one call
# (int8, 12 articles, benchmarks/ingest.py).
EMBED_BATCH = 128
# Two queues: chunks packed near the budget, and the short rest (the ends of sections). 128
# mixed chunks pad 3.2 % of their tokens, two queues 1.5 %, all 1,589 of the 101 articles
# sorted at once 0.4 % (token counts of jaquad_dev_articles' chunks, batches of 16).
FULL_CHUNK_SHARE = 0.8
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
    def embedded(self, chunks: int) -> None: ...  # chunks just embedded (for a chunks/s figure)
    def log(self, message: str) -> None: ...


class SilentReporter:
    def start(self, total: int) -> None: ...
    def advance(self, path: str) -> None: ...
    def embedded(self, chunks: int) -> None: ...
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
    repaired: list[dict] = field(default_factory=list)  # {path, problem}: damage found and rebuilt
    rebuilt: bool = False  # every note indexed again (--rebuild, or no readable manifest)
    reindexed: int = 0  # documents indexed again because their index files were damaged (or --rebuild)
    reused_vectors: int = 0  # after a repair or rebuild: live vectors kept from Chroma, not embedded again

    def to_dict(self) -> dict:
        return {**asdict(self), "repair_note": self.repair_note()}

    def repair_note(self) -> str | None:
        """One line saying the index was rebuilt from the notes, and how many vectors were kept."""
        if self.repaired:
            return f"インデックスの破損を検出し、ノートから作り直しました (ベクトル再利用 {self.reused_vectors} 件)"
        if self.rebuilt:
            return f"インデックスをノートから作り直しました (ベクトル再利用 {self.reused_vectors} 件)"
        return None


def fingerprint(settings: "Settings") -> dict:
    from pipeline.index.embedder import embedding_name

    return {
        "embed_model": embedding_name(settings),  # int8 vectors: another model as far as an index goes
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
        # Missing from Chroma, not yet embedded: [near-full chunks, short chunks].
        self._to_embed: tuple[list[tuple[Chunk, str]], list[tuple[Chunk, str]]] = ([], [])
        self._reporter: Reporter = SilentReporter()

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
        self, paths: list[Path], reporter: Reporter | None = None, wait: float = 0.0, rebuild: bool = False
    ) -> IngestSummary:
        """Bring the index in step with `paths`. rebuild: index every note again, trusting no
        derived file (vectors still in Chroma for the same chunks are kept)."""
        from filelock import FileLock, Timeout

        check_index_dir(self.index_dir)
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.index_dir / LOCK))
            try:
                lock.acquire(timeout=wait)
            except Timeout:
                raise IndexLocked(str(self.index_dir)) from None
            try:
                return self._run_locked(paths, reporter or SilentReporter(), rebuild)
            finally:
                lock.release()
        except Exception as err:
            where = _disk_full(err, self.index_dir)
            if where is None:
                raise
            raise DiskFull(where) from err

    def _run_locked(self, paths: list[Path], reporter: Reporter, rebuild: bool = False) -> IngestSummary:
        self._reporter = reporter
        t0 = time.time()
        summary = IngestSummary(index_dir=str(self.index_dir), started_at=t0)
        self._pending = []
        self._to_embed = ([], [])
        fp = fingerprint(self.settings)
        recovering = (self.index_dir / IN_PROGRESS).exists()
        loaded, trust = self._check_index(fp, rebuild, recovering)
        old = loaded or Manifest(fingerprint=fp)
        if old.documents and old.fingerprint.get("embed_model") != fp["embed_model"]:
            built_with = old.fingerprint.get("embed_model") or ""
            which = ("embed_precision の違う埋め込み" if built_with.partition("#")[0] == self.settings.embed_model
                     else "別の埋め込みモデル")
            raise ConfigError(
                f"このインデックスは{which} ({built_with}) で作られています: {self.index_dir}\n"
                "別の --index を指定するか、フォルダを削除して作り直してください。"
            )
        summary.repaired = trust.damage
        summary.rebuilt = trust.redo_all

        found = scan(paths)
        summary.roots = [str(r) for r in found.roots]
        summary.skipped = [{"path": p, "reason": r} for p, r in found.skipped]
        docs: dict[str, DocEntry] = dict(trust.kept)
        todo: list[tuple[Path, os.stat_result]] = []
        seen: set[str] = set()
        max_mb = self.settings.max_file_mb
        for f in found.files:
            key = str(f)
            seen.add(key)
            entry = docs.get(key)
            try:
                st = f.stat()
            except OSError as err:
                summary.skipped.append({"path": key, "reason": _os_reason(err)})
                continue
            same_fp = old.fingerprint == fp
            if (
                entry and same_fp and key not in trust.redo
                and entry.size == st.st_size and entry.mtime_ns == st.st_mtime_ns
            ):
                summary.unchanged += 1
                continue
            if max_mb and st.st_size > max_mb * 1_000_000:
                summary.skipped.append({"path": key, "reason": _too_big(st.st_size, max_mb)})
                if key in trust.redo:
                    docs.pop(key)  # its index entry is damaged and its note is not indexed again
                continue
            todo.append((f, st))
        deleted = [p for p in docs if in_scope(p, found.roots) and p not in seen]
        # Damaged documents outside this run's folders are rebuilt from their notes too.
        for key in sorted(trust.redo - seen - set(deleted)):
            try:
                todo.append((Path(key), Path(key).stat()))
            except OSError:
                deleted.append(key)  # its note is gone and its index entry cannot be trusted
        for p in deleted:
            docs.pop(p)
        summary.deleted = len(deleted)
        summary.deleted_paths = deleted

        if todo or deleted or trust.damage or rebuild:
            write_atomic(self.index_dir / IN_PROGRESS, str(os.getpid()))
            _fault_point("after_marker")
        if trust.wipe_chroma:
            from pipeline.index.store import wipe_chroma

            wipe_chroma(self.index_dir, self._store)
            self._store = None
        reporter.start(len(todo))
        reindexed = 0
        for f, st in todo:
            key = str(f)
            entry = docs.get(key)
            redo = trust.redo_all or key in trust.redo
            try:
                new_entry = self._index_file(f, st, entry, fp, summary, force=redo, rewrite=rebuild)
            except ReadError as err:
                summary.skipped.append({"path": key, "reason": err.reason})
                reporter.log(f"skip {key}: {err.reason}")
                if redo:
                    docs.pop(key, None)  # its index entry is damaged: only its note could rebuild it
            else:
                if new_entry is None:  # same bytes, only the mtime moved
                    summary.unchanged += 1
                    docs[key] = _touched(entry, st)
                else:
                    docs[key] = new_entry
                    if redo and (entry is not None or loaded is None):
                        reindexed += 1
                    elif entry is None:
                        summary.added += 1
                        summary.added_paths.append(key)
                    else:
                        summary.changed += 1
                        summary.changed_paths.append(key)
            reporter.advance(key)
        self._flush_vectors()

        summary.reindexed = reindexed
        changed = bool(summary.added or summary.changed or summary.deleted or reindexed)
        new = Manifest(
            generation=old.generation,
            fingerprint=fp,
            documents=dict(sorted(docs.items())),
            snapshot=old.snapshot,
            snapshot_files=old.snapshot_files,
            chroma_files=old.chroma_files,
            chroma_seq=old.chroma_seq,
            roots=_roots(old.roots, summary.roots, docs),
        )
        if changed or old.snapshot is None or old.fingerprint != fp or trust.new_snapshot:
            new.generation = max(old.generation, trust.min_generation) + 1
            new.snapshot, new.snapshot_files = self._write_snapshot(new)
            _fault_point("before_manifest")
        if new != loaded:
            new.save(self.index_dir)  # commit point
            _fault_point("after_manifest")

        if changed or recovering or trust.damage or rebuild:
            summary.removed_chunks = self._sweep(new, old, full=recovering or bool(trust.damage) or rebuild)
            _fault_point("after_sweep")
        if not self.settings.chroma_host:
            # Chroma's persisted vector files as this run leaves them: the next ingest (and a
            # reader of a snapshot without vectors.npy) checks them against these stamps.
            from pipeline.index.store import chroma_file_stamps

            stamps, seq = chroma_file_stamps(self.index_dir, new.chroma_files)
            if (stamps, seq) != (new.chroma_files, new.chroma_seq):
                new.chroma_files, new.chroma_seq = stamps, seq
                new.save(self.index_dir)
        (self.index_dir / IN_PROGRESS).unlink(missing_ok=True)

        summary.documents = len(new.documents)
        summary.chunks = new.chunk_count()
        if trust.damage or rebuild:
            summary.reused_vectors = max(0, summary.chunks - summary.embedded_chunks)
        summary.finished_at = time.time()
        summary.seconds = round(summary.finished_at - t0, 3)
        write_json(self.index_dir / LAST_RUN, summary.to_dict())
        return summary

    def _check_index(self, fp: dict, rebuild: bool, recovering: bool) -> tuple[Manifest | None, "_Trust"]:
        """Check every file of the index before updating it; decide what to rebuild from the notes.

        Reads the manifest, the stamps of the snapshot's and the chunk files (hashing only
        files whose size or mtime moved), and asks Chroma for its vector count (and for
        its IDs when the count is off). Nothing is written here.
        """
        trust = _Trust(min_generation=max(snapshot_generations(self.index_dir), default=0))
        try:
            manifest = Manifest.load(self.index_dir)
        except IndexCorrupt as err:
            trust.damage.append({"path": err.path, "problem": err.problem})
            manifest = None
        try:
            load_last_run(self.index_dir, roots=())  # rewritten at the end of this run anyway
        except IndexCorrupt as err:
            trust.damage.append({"path": err.path, "problem": err.problem})
        if manifest is None:
            # Nothing to trust but the notes (and vectors Chroma holds for the same chunks).
            trust.redo_all = bool(trust.damage)
            if trust.redo_all:
                self._check_chroma(None, trust, recovering)
            return None, trust
        trust.kept = dict(manifest.documents)
        if rebuild:
            trust.redo_all = True
            trust.redo = set(manifest.documents)
            self._check_chroma(manifest, trust, recovering)
            return manifest, trust
        if manifest.snapshot is not None:
            self._check_snapshot(manifest, trust, recovering)
        for path, entry in manifest.documents.items():
            file = self.index_dir / entry.chunk_file
            if entry.chunk_stamp is None:  # format 1: check the content, then stamp it
                try:
                    read_chunk_file(self.index_dir, entry, path)
                except IndexCorrupt as err:
                    problem = err.problem
                else:
                    trust.kept[path] = DocEntry(**{**asdict(entry), "chunk_stamp": stamp_of(file)})
                    continue
            else:
                problem = stamp_problem(file, entry.chunk_stamp, trust_mtime=True)
            if problem:
                trust.damage.append({"path": str(file), "problem": problem})
                trust.redo.add(path)
        self._check_chroma(manifest, trust, recovering)
        return manifest, trust

    def _check_snapshot(self, manifest: Manifest, trust: "_Trust", recovering: bool) -> None:
        snapshot = self.index_dir / manifest.snapshot
        mine = int(manifest.snapshot.rsplit("-", 1)[1])
        if trust.min_generation > mine and not recovering:
            trust.damage.append({
                "path": str(self.index_dir / MANIFEST),
                "problem": f"古い世代 {mine} を指しています。新しい世代 {trust.min_generation} があります (stale manifest)",
            })
            trust.new_snapshot = True
        if not manifest.snapshot_files:  # format 1: written again, with stamps
            trust.new_snapshot = True
        elif not snapshot.is_dir():
            trust.damage.append({"path": str(snapshot), "problem": "フォルダがありません (missing)"})
            trust.new_snapshot = True
        else:
            for name, stamp in manifest.snapshot_files.items():
                problem = stamp_problem(snapshot / name, stamp, trust_mtime=True)
                if problem:
                    trust.damage.append({"path": str(snapshot / name), "problem": problem})
                    trust.new_snapshot = True

    def _check_chroma(self, manifest: Manifest | None, trust: "_Trust", recovering: bool) -> None:
        """Vectors the manifest's chunks need: Chroma's files against their stamps, then its
        count, then (when the count is off) which live chunks have no vector. Without a
        manifest, only whether Chroma can be opened safely (its vectors are reused by ID)."""
        from pipeline.index.store import CHROMA_DIR, chroma_problem

        chroma = self.index_dir / CHROMA_DIR
        local = not self.settings.chroma_host
        if local:
            # A killed run may have left a segment ahead of the recorded stamps: structure only.
            stamps = ({}, {}) if recovering or manifest is None else (manifest.chroma_files, manifest.chroma_seq)
            problem = chroma_problem(self.index_dir, *stamps)
            if problem:
                trust.damage.append({"path": str(problem[0]), "problem": problem[1]})
                trust.wipe(manifest)
                return
        try:
            count = self.store.count()
        except RagError:
            raise
        except Exception as err:  # chromadb's own errors on a damaged database
            if not local:
                raise
            trust.damage.append({"path": str(chroma), "problem": f"Chroma を開けません: {err}"})
            trust.wipe(manifest)
            return
        if manifest is None:
            return
        kept_ids = {cid for p, e in trust.kept.items() if p not in trust.redo for cid in e.chunk_ids}
        if count == manifest.chunk_count() and not trust.damage:
            return
        if count < len(kept_ids) or trust.damage:
            have = self.store.all_ids()
            missing = kept_ids - have
            if missing:
                trust.damage.append({
                    "path": str(chroma), "problem": f"ベクトルが {len(missing)} 件ありません (missing vectors)",
                })
                trust.redo |= {p for p, e in trust.kept.items() if missing.intersection(e.chunk_ids)}
            count = len(have)
        if count > manifest.chunk_count() and local and not recovering and not trust.damage:
            trust.damage.append({
                "path": str(chroma),
                "problem": f"マニフェストにないベクトルが {count - manifest.chunk_count()} 件あります (orphan vectors)",
            })

    def _index_file(
        self, f: Path, st: os.stat_result, entry: DocEntry | None, fp: dict, summary: IngestSummary,
        force: bool = False, rewrite: bool = False,
    ) -> DocEntry | None:
        """Index one note. force: even when its bytes match `entry` (its index files are
        damaged); rewrite: do not reuse an existing chunk file, even a sound one."""
        from pipeline.documents import embed_header
        from pipeline.ingest.readers import read_document

        doc = read_document(f)
        if doc.metadata.get("warning"):
            summary.warnings.append({"path": doc.path, "warning": doc.metadata["warning"]})
        rel = chunk_file_for(doc.path, doc.content_hash, fp)
        if not force and entry and entry.hash == doc.content_hash and entry.chunk_file == rel:
            return None
        try:
            chunks = self.chunker.chunk_document(doc)
        except ValueError as err:
            raise ReadError(doc.path, str(err)) from err
        if not chunks:
            raise ReadError(doc.path, "本文がありません (no text to index)")
        texts = [embed_header(c.title, c.heading_path) + "\n" + c.text for c in chunks]
        stamp = None if rewrite else self._sound_chunk_file(rel, doc.path, doc.content_hash, chunks)
        if stamp is None:
            tokens = [bm25_tokens(self.analyzer, t) for t in texts]
            stored = StoredDocument(
                path=doc.path,
                title=doc.title,
                text=doc.text[doc.body_start :],
                body_start=doc.body_start,
                first_line=doc.line_of(doc.body_start),
                hash=doc.content_hash,
            )
            stamp = write_chunk_file(self.index_dir, rel, chunks, tokens, stored)
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
            chunk_stamp=stamp,
        )

    def _sound_chunk_file(self, rel: str, path: str, doc_hash: str, chunks: list[Chunk]) -> dict | None:
        """The stamp of an existing chunk file for exactly these chunks (a killed run's work,
        or a document version seen before), or None when there is none or it is damaged."""
        file = self.index_dir / rel
        try:
            data = file.read_bytes()
            parsed, _, document = parse_chunk_file(data)
        except (OSError, ValueError):
            return None
        if chunk_file_mismatch(parsed, document, doc_hash, path, [c.id for c in chunks]):
            return None
        return stamp_of(file, data)

    def _embed_missing(self, chunks: list[Chunk], texts: list[str]) -> int:
        """Queue the chunks whose vectors are not in Chroma yet, near-full and short apart; embed
        a queue once EMBED_BATCH wait in it.
        A killed run's work is kept up to the vectors not yet written to Chroma (written
        ADD_BATCH at a time): the next run embeds only those again."""
        have = self.store.existing([c.id for c in chunks])
        todo = [(c, t) for c, t in zip(chunks, texts) if c.id not in have]
        full = FULL_CHUNK_SHARE * self.settings.chunk_tokens
        for item in todo:
            self._to_embed[0 if item[0].token_count >= full else 1].append(item)
        for queue in self._to_embed:
            if len(queue) >= EMBED_BATCH:
                self._embed(queue)
        if len(self._pending) >= ADD_BATCH:
            self._write_vectors()
        return len(todo)

    def _embed(self, queue: list[tuple[Chunk, str]]) -> None:
        if queue:
            vectors = self.embedder.embed_passages([t for _, t in queue])
            self._pending.extend(zip([c for c, _ in queue], vectors))
            self._reporter.embedded(len(queue))
            queue.clear()

    def _flush_vectors(self) -> None:
        """Embed what is queued, and write every embedded vector to Chroma."""
        for queue in self._to_embed:
            self._embed(queue)
        self._write_vectors()

    def _write_vectors(self) -> None:
        if self._pending:
            self.store.add([c for c, _ in self._pending], [v for _, v in self._pending])
            self._pending = []
            _fault_point("after_chroma_add")

    def _write_snapshot(self, manifest: Manifest) -> tuple[str, dict[str, dict]]:
        """chunks.jsonl + BM25 + a copy of the vectors of every live chunk, in a new directory;
        returns it and the stamps of its files."""
        from pipeline.index.bm25 import BM25Index
        from pipeline.index.vectors import write_vectors

        rel = f"{SNAPSHOTS}/gen-{manifest.generation:06d}"
        final = self.index_dir / rel
        tmp = self.index_dir / f"{SNAPSHOTS}/.tmp-gen-{manifest.generation:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            ids: list[str] = []
            all_tokens: list[list[str]] = []
            lines: list[str] = []
            doc_lines: list[str] = []
            for path, entry in manifest.documents.items():
                chunks, tokens, document = read_chunk_file(self.index_dir, entry, path)
                doc_lines.append(json.dumps(document, ensure_ascii=False))
                for c, t in zip(chunks, tokens):
                    ids.append(c.id)
                    all_tokens.append(t)
                    lines.append(json.dumps(chunk_to_record(c), ensure_ascii=False))
            (tmp / CHUNKS_FILE).write_text("".join(x + "\n" for x in lines), "utf-8")
            (tmp / DOCUMENTS_FILE).write_text("".join(x + "\n" for x in doc_lines), "utf-8")
            BM25Index.build(ids, all_tokens).save(tmp / BM25_DIR)
            # Readers search this copy of the vectors, not Chroma (pipeline.index.vectors).
            write_vectors(tmp, ids, self.store)
            stamps = {
                str(f.relative_to(tmp)): stamp_of(f) for f in sorted(tmp.rglob("*")) if f.is_file()
            }
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
            raise
        _fault_point("before_snapshot_rename")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return rel, stamps

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


@dataclass
class _Trust:
    """What `Ingestor._check_index` found, and what the run rebuilds from the notes."""

    min_generation: int = 0  # the newest snapshot on disk: a new one goes above it
    kept: dict[str, DocEntry] = field(default_factory=dict)  # manifest entries (stamped when format 1)
    damage: list[dict] = field(default_factory=list)  # {path, problem}
    redo: set[str] = field(default_factory=set)  # documents indexed again though their notes did not change
    redo_all: bool = False  # every note: --rebuild, or no readable manifest
    new_snapshot: bool = False
    wipe_chroma: bool = False

    def wipe(self, manifest: Manifest | None) -> None:
        """Chroma cannot be trusted: start it empty and embed every document again."""
        self.wipe_chroma = True
        self.redo |= set(manifest.documents) if manifest else set()


def _roots(old: list[str], given: list[str], docs: dict[str, DocEntry]) -> list[str]:
    """The note folders the index's documents come from (the way out that IndexCorrupt prints)."""
    return sorted(r for r in dict.fromkeys([*given, *old]) if any(in_scope(p, [Path(r)]) for p in docs))


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DISK_FULL_TEXT = ("disk is full", "no space left", "file too large", "quota exceeded")
LOW_SPACE = 16 << 20  # bytes free below which a failed Chroma write is put down to a full disk


def _disk_full(err: BaseException, index_dir: Path) -> str | None:
    """Where the disk ran out, when `err` or what caused it says so; else None.

    Our own writes raise OSError (ENOSPC, EDQUOT, or EFBIG under a file size limit).
    Chroma's say it in text at best (sqlite's SQLITE_FULL), and sqlite reports a file
    size limit as a plain I/O error, so a failed Chroma write also asks the disk.
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            return seen.filename or str(index_dir)
        if type(seen).__module__.startswith("chromadb"):
            chroma = index_dir / CHROMA_DIR
            if any(t in str(seen).lower() for t in _DISK_FULL_TEXT) or _cannot_grow(chroma):
                return str(chroma)
        seen = seen.__cause__ or seen.__context__
    return None


def _cannot_grow(folder: Path) -> bool:
    """Whether files in `folder` cannot grow: little space left, or a file size limit below
    Chroma's largest file plus 1 MiB (probed with a one-byte sparse write, then removed)."""
    import tempfile

    try:
        if shutil.disk_usage(folder).free < LOW_SPACE:
            return True
        largest = max((f.stat().st_size for f in folder.rglob("*") if f.is_file()), default=0)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".space-probe-")
        try:
            os.pwrite(fd, b"\0", largest + (1 << 20))
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        return err.errno in _DISK_FULL
    return False


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
