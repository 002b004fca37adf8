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


# ---------------------------------------------------------------- integrity of embedded Chroma
#
# Chroma keeps its records in chroma.sqlite3, which sqlite checks itself (a damaged file
# fails to open), and its vectors in HNSW files, one folder per segment, which nothing
# checks: a vector file filled with garbage crashes the process (SIGSEGV) at the first
# query. Until a segment is persisted (Chroma's `max_seq_id` for it; the first 1,000
# records by default) Chroma rebuilds it from its log on every open and rewrites those
# files as scratch; once persisted, only writers touch them. So a persisted segment's
# files are checked before Chroma opens them: their structure always (`hnsw_problem`),
# and their stamps when the segment is still at the log position an ingest recorded.

CHROMA_DIR = "chroma"
CHROMA_DB = "chroma.sqlite3"
HNSW_FILES = ("header.bin", "data_level0.bin", "length.bin", "link_lists.bin", "index_metadata.pickle")


def persisted_segments(index_dir: Path) -> dict[str, int]:
    """Embedded Chroma's persisted vector segments: folder name -> log position they hold.

    Read from chroma.sqlite3 directly (read-only, no Chroma import). Raises
    sqlite3.DatabaseError when the database is damaged.
    """
    import sqlite3

    db = index_dir / CHROMA_DIR / CHROMA_DB
    if not db.is_file():
        return {}
    # A write cut short (a full disk) leaves a journal that the next opener rolls back:
    # read-only, sqlite could not; Chroma would do it anyway when it opens the database.
    journal = db.with_name(CHROMA_DB + "-journal")
    mode = "rw" if journal.exists() and journal.stat().st_size else "ro"
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode={mode}", uri=True)
    try:
        rows = con.execute(
            "SELECT s.id, m.seq_id FROM segments s JOIN max_seq_id m ON m.segment_id = s.id"
            " WHERE s.scope = 'VECTOR'"
        ).fetchall()
    finally:
        con.close()
    return {str(sid): int(seq) for sid, seq in rows}


def hnsw_problem(folder: Path) -> str | None:
    """Why a persisted HNSW segment folder cannot be loaded safely, or None.

    Follows the layout Chroma's hnswlib persists (header.bin; data_level0.bin: per element
    its level-0 neighbour list, vector and label; length.bin: vector norms;
    link_lists.bin: per element a size and its upper-level neighbour lists). Checks the
    header against the files' sizes and every neighbour against the element count and
    the levels (an out-of-range neighbour is what crashes hnswlib). Reads
    data_level0.bin once (≈ 1.8 KB per 384-dim vector).
    """
    import struct

    import numpy as np

    for name in HNSW_FILES:
        if not (folder / name).is_file():
            return f"{name} がありません (missing)"
    header = (folder / "header.bin").read_bytes()
    if len(header) != 100:
        return f"header.bin の大きさが違います ({len(header)} バイト)"
    (version, off0, max_el, cur, per_el, label_off, off_data, max_level, entry, max_m, max_m0, m, _mult, _efc) = (
        struct.unpack("<iQQQQQQiiQQQdQ", header)
    )
    if version != 1:
        return None  # another persistence format: Chroma checks the version itself, before loading
    if (
        off0 != 0 or cur > max_el or max_m != m or max_m0 != 2 * m or not 0 < m < 4096
        or off_data != (max_m0 + 1) * 4 or label_off + 8 != per_el or label_off <= off_data
        or not -1 <= max_level < 64 or (cur and not 0 <= entry < cur)
    ):
        return "header.bin の値が壊れています (bad header)"
    data = np.fromfile(folder / "data_level0.bin", dtype=np.uint8)
    if data.size < cur * per_el:
        return f"data_level0.bin が {data.size} バイト、ヘッダーからは {cur * per_el} バイト以上"
    if (folder / "length.bin").stat().st_size < cur * 4:
        return f"length.bin が短すぎます ({cur} 件の長さがありません)"
    # link_lists.bin: for each element, a uint32 size (a multiple of one list) and its lists.
    words = np.fromfile(folder / "link_lists.bin", dtype=np.uint32)
    sizes_at, pos, per_list = [], 0, (max_m + 1) * 4
    flat = words.tolist()
    for _ in range(cur):
        if pos >= len(flat):
            return "link_lists.bin が途中で切れています (truncated)"
        size = flat[pos]
        if size % per_list or size // per_list > max(max_level, 0):
            return "link_lists.bin のリストの大きさが壊れています"
        sizes_at.append((pos + 1, size // 4))
        pos += 1 + size // 4
    if pos > len(flat):
        return "link_lists.bin が途中で切れています (truncated)"
    levels = np.array([n // (max_m + 1) for _, n in sizes_at], dtype=np.int64)
    if cur and levels[entry] != max_level:
        return "header.bin の入口の階層が link_lists.bin と合いません"
    level0 = np.ascontiguousarray(data[: cur * per_el].reshape(cur, per_el)[:, :off_data]).view(np.uint32)
    blocks = [words[at : at + n].reshape(-1, max_m + 1) for at, n in sizes_at if n]
    upper = np.concatenate(blocks) if blocks else np.zeros((0, max_m + 1), dtype=np.uint32)
    upper_level = np.concatenate([np.arange(1, len(b) + 1) for b in blocks]) if blocks else np.zeros(0, np.int64)
    for links, most, name, at_level in ((level0, max_m0, "data_level0.bin", None), (upper, max_m, "link_lists.bin", upper_level)):
        counts = links[:, 0] & 0xFFFF
        if np.any(counts > most):
            return f"{name} の近傍数が壊れています (bad neighbour count)"
        used = np.arange(most)[None, :] < counts[:, None]
        neighbours = links[:, 1:]
        if np.any(neighbours[used] >= cur):
            return f"{name} の近傍が範囲外です (neighbour out of range)"
        if at_level is not None and np.any(levels[neighbours[used]] < np.broadcast_to(at_level[:, None], used.shape)[used]):
            return f"{name} の近傍の階層が合いません"
    meta = (folder / "index_metadata.pickle").read_bytes()
    if not (meta[:1] == b"\x80" and meta.endswith(b".")):
        return "index_metadata.pickle が壊れています"
    return None


def chroma_problem(
    index_dir: Path, recorded: dict[str, dict] | None = None, recorded_seq: dict[str, int] | None = None
) -> tuple[Path, str] | None:
    """The first damaged part of embedded Chroma's storage (path, problem), or None.

    recorded / recorded_seq: stamps of the persisted segments' files and the log
    positions they were taken at (an ingest's end); compared only for a segment still
    at that position, since a later ingest may have persisted it again.
    """
    import sqlite3

    from pipeline.index.manifest import stamp_problem

    chroma = index_dir / CHROMA_DIR
    try:
        segments = persisted_segments(index_dir)
    except sqlite3.OperationalError as err:
        # A writer holds it, or another Chroma version's schema: not damage, not ours to judge.
        if "locked" in str(err) or "no such" in str(err):
            return None
        return chroma / CHROMA_DB, f"SQLite として読めません: {err}"
    except sqlite3.DatabaseError as err:
        return chroma / CHROMA_DB, f"SQLite として読めません: {err}"
    for sid, seq in segments.items():
        folder = chroma / sid
        if not folder.is_dir():
            return folder, "ベクトルのフォルダがありません (missing HNSW segment)"
        problem = hnsw_problem(folder)
        if problem:
            return folder, problem
        if (recorded_seq or {}).get(sid) != seq:
            continue
        for name in HNSW_FILES:
            stamp = (recorded or {}).get(f"{CHROMA_DIR}/{sid}/{name}")
            problem = stamp and stamp_problem(folder / name, stamp, trust_mtime=True)
            if problem:
                return folder / name, problem
    return None


def chroma_file_stamps(index_dir: Path, previous: dict[str, dict] | None = None) -> tuple[dict[str, dict], dict[str, int]]:
    """Stamps of the persisted segments' files (by path relative to the index) and the log
    positions they hold. A file with the size and mtime of its `previous` stamp keeps it."""
    from pipeline.index.manifest import stamp_of

    segments = persisted_segments(index_dir)
    out = {}
    for sid in segments:
        for name in HNSW_FILES:
            f = index_dir / CHROMA_DIR / sid / name
            if not f.is_file():
                continue
            rel = f"{CHROMA_DIR}/{sid}/{name}"
            st, old = f.stat(), (previous or {}).get(rel)
            same = old is not None and (old["size"], old.get("mtime_ns")) == (st.st_size, st.st_mtime_ns)
            out[rel] = old if same else stamp_of(f)
    return out, segments


def wipe_chroma(index_dir: Path, store: "ChromaStore | None" = None) -> None:
    """Delete embedded Chroma's storage (damaged beyond reuse): the next store starts empty.

    Chroma shares one system per folder within a process; it is stopped first, so a
    store opened afterwards does not write through handles to the deleted files.
    """
    import shutil

    from chromadb.api.shared_system_client import SharedSystemClient

    path = index_dir / CHROMA_DIR
    if store is not None:
        try:
            store.client.close()
        except Exception:  # closing a client over a damaged database may fail too
            pass
    system = SharedSystemClient._identifier_to_system.pop(str(path), None)
    SharedSystemClient._identifier_to_refcount.pop(str(path), None)
    if system is not None:
        try:
            system.stop()
        except Exception:
            pass
    shutil.rmtree(path, ignore_errors=True)
