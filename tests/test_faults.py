"""Fault suite: an ingest SIGKILLed at seeded points, then run again; concurrent ingests.

Kills go through the hook in `pipeline.ingest.sync._fault_point`: RAG_FAULT_AT="stage:n"
SIGKILLs the ingest the n-th time it reaches `stage`. Killed ingests run in processes
forked from a forkserver that has the heavy libraries imported already, so a kill
costs a fork, not an interpreter start-up (≈ 10 s here).

After every kill the index must still be the previous complete state (or, once the
manifest is saved, the new one), and the next run must leave it complete and
consistent: manifest, snapshot, BM25, chunk files and Chroma agree, with no orphan,
duplicate or missing chunk and no lost document.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import IndexLocked, IndexNotFound
from pipeline.index.manifest import IN_PROGRESS, Manifest
from pipeline.index.search import search
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import REPO, hash_settings

SEED = 20250311
STAGES = (
    "after_marker",
    "after_chunk_file",
    "after_chroma_add",
    "before_snapshot_rename",
    "before_manifest",
    "after_manifest",
    "during_sweep",
    "after_sweep",
)
COMMITTED = {"after_manifest", "during_sweep", "after_sweep"}  # the manifest is already saved

# ---------------------------------------------------------------- the two corpora

_BODY = {
    "keep1.md": "# 量子化\n\n7Bモデルは4bit量子化で約4GBのメモリで動く。{v}\n量子化で精度は少し落ちる。\n",
    "keep2.org": "#+TITLE: RAGメモ\n* 検索拡張生成\n<2025-03-11 Tue 08:28>\nRAGは検索した文書を根拠にして回答する手法です。{v}\n",
    "keep3.txt": "🔗 用語集\nBM25は語の頻度で文書を順位付けする。{v}\nMeCabで形態素に分けてから数える。\n",
    "mod1.md": "# Ollama\n\nOllamaの既定のポートは11434です。{v}\nモデルは ollama pull で取得する。\n",
    "mod2.txt": "推論の設定\n温度を下げると答えが安定する。{v}\n長い文脈では速度が落ちる。\n",
    "del1.md": "# 古いメモ\n\nこの文書は版Bで削除される。{v}\n削除された文の引用は出てはいけない。\n",
    "del2.org": "* 廃止予定\n古い設定の説明です。{v}\nもう使わない。\n",
    "new1.md": "# 新しいメモ\n\n版Bで追加された文書です。{v}\n埋め込みは新しく計算される。\n",
    "new2.txt": "追加メモ\nチャンクの境界は文の切れ目に合わせる。{v}\n",
    "new3.md": "# 評価\n\n引用の適合率と再現率を測る。{v}\n",
}
A_FILES = ("keep1.md", "keep2.org", "keep3.txt", "mod1.md", "mod2.txt", "del1.md", "del2.org")
B_FILES = ("keep1.md", "keep2.org", "keep3.txt", "mod1.md", "mod2.txt", "new1.md", "new2.txt", "new3.md")
B_WORK = 5  # files the A -> B run indexes (2 changed + 3 new): a chunk file each, and a Chroma write each at ADD_BATCH=EMBED_BATCH=1
HITS = {s: (B_WORK if s in ("after_chunk_file", "after_chroma_add") else 1) for s in STAGES}
MTIME_NS = {"A": 1_700_000_000 * 10**9, "B": 1_700_000_500 * 10**9}


def version_bytes(version: str) -> dict[str, bytes]:
    names = A_FILES if version == "A" else B_FILES
    out = {}
    for name in names:
        # Changed files differ in text and size; kept files are identical in A and B.
        tag = f"版{version}の追記。" * (3 if version == "B" else 2) if name.startswith("mod") else ""
        filler = "".join(f"{name}の補足{i}番目の説明文です。" for i in range(8))
        out[name] = (_BODY[name].format(v=tag) + filler + "\n").encode("utf-8")
    return out


def write_corpus(folder: Path, version: str) -> dict[str, bytes]:
    """Make `folder` hold exactly `version`, with fixed mtimes so a copied index matches it."""
    files = version_bytes(version)
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.name not in files:
            f.unlink()
    for i, (name, data) in enumerate(sorted(files.items())):
        path = folder / name
        same = path.exists() and path.read_bytes() == data
        if not same:
            path.write_bytes(data)
        if version == "A" or not same:
            ns = MTIME_NS[version] + i
            os.utime(path, ns=(ns, ns))
    return {str(folder / n): b for n, b in files.items()}


# ------------------------------------------------------------ checking an index


def check_index(settings, expected: dict[str, bytes] | tuple[dict, ...], store=None, final=True) -> str | None:
    """Assert the index is one complete state; returns which of `expected` it is (its index).

    expected: {path: bytes} of the corpus the manifest must describe, or a tuple of such
    dicts (any one may match: the state before or after a killed run's commit).
    final: also demand no leftovers (orphan vectors, chunk files, temp files, marker).
    """
    from pipeline.index.bm25 import IDS_FILE
    from pipeline.index.store import ChromaStore

    index_dir = Path(settings.index_dir)
    choices = expected if isinstance(expected, tuple) else (expected,)
    manifest = Manifest.load(index_dir)
    assert manifest is not None and manifest.snapshot, "no committed manifest"
    hashes = {p: e.hash for p, e in manifest.documents.items()}
    which = next(
        (i for i, c in enumerate(choices) if hashes == {p: hashlib.sha256(b).hexdigest() for p, b in c.items()}),
        None,
    )
    assert which is not None, f"manifest matches no expected corpus: {sorted(hashes)}"
    files = choices[which]

    live: list[str] = [cid for e in manifest.documents.values() for cid in e.chunk_ids]
    assert len(live) == len(set(live)), "a chunk ID is listed twice in the manifest"
    snap = open_index(settings)
    lines = [
        json.loads(x)["id"]
        for x in (index_dir / manifest.snapshot / "chunks.jsonl").read_text("utf-8").splitlines()
        if x.strip()
    ]
    assert len(lines) == len(set(lines)), "duplicate chunk in the snapshot"
    assert set(lines) == set(live), "snapshot and manifest disagree"
    bm25_ids = json.loads((index_dir / manifest.snapshot / "bm25" / IDS_FILE).read_text("utf-8"))
    assert sorted(bm25_ids) == sorted(live), "BM25 and manifest disagree"
    assert set(snap.documents) == set(files)
    spans = set()
    for path, data in files.items():
        text = data.decode("utf-8")  # the corpora are LF-only UTF-8: Document.text is the file
        stored = snap.documents[path]
        assert stored.hash == hashlib.sha256(data).hexdigest()
        assert stored.text == text[stored.body_start :]
        entry = manifest.documents[path]
        assert (index_dir / entry.chunk_file).exists()
        for cid in entry.chunk_ids:
            c = snap.chunks[cid]
            assert c.path == path and c.doc_hash == entry.hash
            assert text[c.start : c.end] == c.text, f"{cid} is not a verbatim slice of {path}"
            spans.add((c.path, c.start, c.end))
    assert len(spans) == len(live), "two chunks cover the same span"

    store = store or ChromaStore(settings, index_dir)
    in_chroma = store.all_ids()
    assert set(live) <= in_chroma, f"{len(set(live) - in_chroma)} live chunks have no vector"
    got = store.collection.get(ids=live, include=["metadatas"])
    for cid, meta in zip(got["ids"], got["metadatas"]):
        assert meta["doc_hash"] == snap.chunks[cid].doc_hash and meta["path"] == snap.chunks[cid].path
    for retriever in ("bm25", "dense", "hybrid"):
        for hit in search(snap, "量子化 ポート 検索 文書", k=8, retriever=retriever):
            assert hit.chunk.id in snap.chunks
    if final:
        assert in_chroma == set(live) and store.count() == len(live), "orphan vectors in Chroma"
        on_disk = {str(f.relative_to(index_dir)) for f in (index_dir / "chunks").glob("*/*.json")}
        assert on_disk == {e.chunk_file for e in manifest.documents.values()}, "orphan chunk files"
        assert not list(index_dir.rglob("*.tmp")) and not list(index_dir.glob("snapshots/.tmp-*"))
        assert not (index_dir / IN_PROGRESS).exists()
    return which


# ------------------------------------------------------------- forked ingests


def _forked_ingest(
    index_dir: str, paths: list[str], fault: str | None, wait: float, out: str | None, add_batch: int | None
):
    """Runs in a forked child: exit 0 done, 4 locked, -SIGKILL when the fault hook fired."""
    import pipeline.ingest.sync as sync

    if add_batch:
        # Vectors embedded and written to Chroma file by file: a kill can fall between any two.
        sync.ADD_BATCH = sync.EMBED_BATCH = add_batch
    if fault:
        os.environ["RAG_FAULT_AT"] = fault
    else:
        os.environ.pop("RAG_FAULT_AT", None)
    try:
        summary = Ingestor(hash_settings(Path(index_dir)), Path(index_dir)).run(
            [Path(p) for p in paths], wait=wait
        )
    except IndexLocked:
        sys.exit(4)
    if out:
        Path(out).write_text(json.dumps(summary.to_dict()), "utf-8")


FORK_PRELOAD = [
    "tests.test_faults", "pipeline.ingest.chunker", "pipeline.index.store", "pipeline.index.bm25",
    "pipeline.japanese", "chromadb", "chromadb.api.rust", "llama_index.vector_stores.chroma", "fugashi", "bm25s",
]


@pytest.fixture(scope="module")
def forks():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORK_PRELOAD)

    def start(index_dir, paths, fault=None, wait=0.0, out=None, add_batch=None):
        args = (str(index_dir), [str(x) for x in paths], fault, wait, out, add_batch)
        p = ctx.Process(target=_forked_ingest, args=args)
        p.start()
        return p

    def run(*args, timeout=240, **kw):
        p = start(*args, **kw)
        p.join(timeout)
        if p.exitcode is None:
            p.kill()
            pytest.fail("forked ingest hung")
        return p.exitcode

    run.start = start
    return run


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults") / "notes"


@pytest.fixture(scope="module")
def template_a(forks, corpus_dir, tmp_path_factory):
    """An index of version A, built once by a child that exited cleanly (copied per case)."""
    index_dir = tmp_path_factory.mktemp("template") / "index"
    write_corpus(corpus_dir, "A")
    assert forks(index_dir, [corpus_dir]) == 0
    return index_dir


def _seeded_cases() -> list[tuple[str, tuple[str, ...]]]:
    """(start, kill points): every stage once at a seeded pass, two kills of a first ingest,
    two runs killed twice in a row."""
    rng = random.Random(SEED)
    cases = [("A", (f"{s}:{rng.randint(1, HITS[s])}",)) for s in STAGES]
    for _ in range(2):
        stage = rng.choice(("after_chunk_file", "after_chroma_add", "before_manifest", "after_manifest"))
        cases.append(("empty", (f"{stage}:{rng.randint(1, 3) if stage.startswith('after_ch') else 1}",)))
    for _ in range(2):
        first = rng.choice(STAGES)
        # The rerun only passes the stages left to do: after a commit, only the sweep;
        # before it, files already chunked or embedded are not redone, so per-file stages
        # are left out of the second kill.
        later = COMMITTED - {"after_manifest"} if first in COMMITTED else set(STAGES) - {"after_chunk_file", "after_chroma_add"}
        second = rng.choice(sorted(later))
        cases.append(("A", (f"{first}:{rng.randint(1, HITS[first])}", f"{second}:1")))
    return cases


CASES = _seeded_cases()


@pytest.mark.parametrize("start,kills", CASES, ids=[f"{s}-{'+'.join(k)}" for s, k in CASES])
def test_killed_ingest_leaves_a_usable_index_and_the_next_run_completes_it(
    start, kills, forks, corpus_dir, template_a, tmp_path
):
    from pipeline.index.store import ChromaStore

    index_dir = tmp_path / "index"
    settings = hash_settings(index_dir)
    a = write_corpus(corpus_dir, "A")
    if start == "A":
        shutil.copytree(template_a, index_dir)
        b = write_corpus(corpus_dir, "B")
    else:
        b = a  # a first ingest: its target is A itself

    for point in kills:
        # Vectors written to Chroma file by file: the most states a kill can land in.
        code = forks(index_dir, [corpus_dir], fault=point, add_batch=1)
        assert code == -9, f"{point}: the hook did not fire (exit {code})"
        # The previous complete state is still there (or the new one, once committed).
        if start == "empty" and not (index_dir / "manifest.json").exists():
            with pytest.raises(IndexNotFound):
                open_index(settings)
            continue
        state = check_index(settings, (a, b), store=ChromaStore(settings, index_dir), final=False)
        committed = point.split(":")[0] in COMMITTED
        if start == "A" and len(kills) == 1:
            assert state == (1 if committed else 0), f"{point}: wrong state after the kill"

    store = ChromaStore(settings, index_dir)
    run = Ingestor(settings, index_dir, store=store).run([corpus_dir])
    assert run.documents == len(b) and not run.skipped
    check_index(settings, b, store=store, final=True)
    # And a further run has nothing left to do.
    again = Ingestor(settings, index_dir, store=store).run([corpus_dir])
    assert (again.added, again.changed, again.deleted, again.embedded_chunks) == (0, 0, 0, 0)
    check_index(settings, b, store=store, final=True)


def test_two_concurrent_ingests_one_exits_locked_and_nothing_is_duplicated(forks, corpus_dir, template_a, tmp_path):
    from pipeline.index.store import ChromaStore

    index_dir = tmp_path / "index"
    write_corpus(corpus_dir, "A")
    shutil.copytree(template_a, index_dir)
    b = write_corpus(corpus_dir, "B")
    procs = [forks.start(index_dir, [corpus_dir]) for _ in range(2)]
    for p in procs:
        p.join(240)
    codes = sorted(p.exitcode for p in procs)
    # Either one found the lock held (4), or the first finished before the second began.
    assert codes in ([0, 4], [0, 0]), codes
    check_index(hash_settings(index_dir), b, store=ChromaStore(hash_settings(index_dir), index_dir))


def test_two_concurrent_ingests_with_wait_both_finish_and_the_second_has_nothing_to_do(
    forks, corpus_dir, template_a, tmp_path
):
    from pipeline.index.store import ChromaStore

    index_dir = tmp_path / "index"
    write_corpus(corpus_dir, "A")
    shutil.copytree(template_a, index_dir)
    b = write_corpus(corpus_dir, "B")
    outs = [tmp_path / "one.json", tmp_path / "two.json"]
    procs = [forks.start(index_dir, [corpus_dir], wait=120, out=str(o)) for o in outs]
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0, 0]
    runs = [json.loads(o.read_text("utf-8")) for o in outs]
    work = sorted(r["embedded_chunks"] for r in runs)
    assert work[0] == 0 and work[1] > 0, "both runs embedded: the lock did not serialise them"
    assert sorted(r["added"] for r in runs) == [0, 3]
    check_index(hash_settings(index_dir), b, store=ChromaStore(hash_settings(index_dir), index_dir))


# ------------------------------------------------------------ the cron face

# no LLM: ingest skips the long-context preparation (tests/test_long_context.py)
CLI_ENV = {**os.environ, "RAG_EMBED_MODEL": "hash:256", "RAG_CHUNK_TOKENS": "120", "RAG_LLM_BACKEND": "extractive"}
CLI_ENV.pop("RAG_FAULT_AT", None)


def rag(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=CLI_ENV, cwd=REPO
    )


def log_line(stdout: str) -> dict:
    lines = [x for x in stdout.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("rag-ingest "), stdout
    return json.loads(lines[0][len("rag-ingest ") :])


def test_quiet_ingest_writes_one_structured_line_and_nothing_else(tmp_path, notes):
    (notes / "empty.md").write_text("", "utf-8")
    out = rag("ingest", str(notes), "--index", str(tmp_path / "index"), "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    line = log_line(out.stdout)
    assert line["status"] == "ok" and line["added"] == 3 and line["documents"] == 3
    assert [Path(s["path"]).name for s in line["skipped"]] == ["empty.md"]
    assert line["skipped"][0]["reason"] and line["seconds"] >= 0 and line["at"]
    assert line["index"] == str(tmp_path / "index") and line["warnings"] == []


def test_cron_run_that_finds_the_lock_held_exits_0_with_a_skip_line_or_4_without_the_flag(tmp_path, notes):
    from filelock import FileLock

    index_dir = tmp_path / "index"
    index_dir.mkdir()
    with FileLock(str(index_dir / ".lock")):
        skip = rag("ingest", str(notes), "--index", str(index_dir), "--quiet", "--skip-if-locked")
        strict = rag("ingest", str(notes), "--index", str(index_dir), "--quiet")
    assert skip.returncode == 0, skip.stderr
    line = log_line(skip.stdout)
    assert line["status"] == "locked" and "another ingest is running" in line["message"]
    assert strict.returncode == 4
    assert log_line(strict.stdout)["status"] == "error" and "実行中" in strict.stderr
    # Nothing was written while the lock was held.
    assert not (index_dir / "manifest.json").exists()


def test_quiet_ingest_failure_is_logged_as_a_line_and_exits_non_zero(tmp_path, notes):
    index_dir = tmp_path / "index"
    Ingestor(hash_settings(index_dir), index_dir).run([notes])
    # Another embedding model against the same index is refused (exit 2, ConfigError).
    env_model = CLI_ENV["RAG_EMBED_MODEL"]
    try:
        CLI_ENV["RAG_EMBED_MODEL"] = "hash:128"
        out = rag("ingest", str(notes), "--index", str(index_dir), "--quiet")
    finally:
        CLI_ENV["RAG_EMBED_MODEL"] = env_model
    assert out.returncode == 2
    line = log_line(out.stdout)
    assert line["status"] == "error" and line["exit_code"] == 2 and "埋め込みモデル" in line["error"]


# ------------------------------------------------------- a repair killed, a full disk

REPAIR_KILLS = ("after_marker", "before_snapshot_rename", "before_manifest", "after_manifest", "during_sweep")


@pytest.mark.parametrize("point", REPAIR_KILLS)
def test_killed_repair_of_a_damaged_index_is_completed_by_the_next_run(point, forks, corpus_dir, template_a, tmp_path):
    """A cut manifest makes the ingest rebuild from the notes; killed, the next run finishes."""
    from pipeline.errors import IndexCorrupt

    index_dir = tmp_path / "index"
    a = write_corpus(corpus_dir, "A")
    shutil.copytree(template_a, index_dir)
    manifest = index_dir / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])
    settings = hash_settings(index_dir)

    assert forks(index_dir, [corpus_dir], fault=f"{point}:1") == -9, f"{point}: the hook did not fire"
    if point in COMMITTED:
        check_index(settings, a, final=False)  # the repaired manifest is committed
    else:
        with pytest.raises(IndexCorrupt, match="manifest.json"):
            open_index(settings)  # still the damaged one: named, not a traceback
    run = Ingestor(settings, index_dir).run([corpus_dir])
    assert run.documents == len(a) and not run.skipped
    check_index(settings, a, final=True)


def _file_size_limit(limit: int):
    """preexec_fn: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored), as on a full disk."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("where", ["chunk file", "chroma"])
def test_full_disk_during_ingest_says_so_and_keeps_the_previous_index(where, corpus_dir, template_a, tmp_path):
    """Writes fail part way (a file size limit on the ingest process): exit 9, the message says
    the disk is full, search still answers from the previous index, the next run completes."""
    index_dir = tmp_path / "index"
    a = write_corpus(corpus_dir, "A")
    shutil.copytree(template_a, index_dir)
    b = write_corpus(corpus_dir, "B")
    big = corpus_dir / "big.md"
    try:
        if where == "chunk file":  # its chunk file is the first write past the limit
            big.write_text("# 大きなメモ\n\n" + "量子化したモデルは小さなメモリで動く。" * 6000 + "\n", "utf-8")
            b = {**b, str(big): big.read_bytes()}
            limit = 400_000
        else:  # Chroma's database grows past the limit when the new vectors are written
            limit = (index_dir / "chroma" / "chroma.sqlite3").stat().st_size // 2
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "ingest", str(corpus_dir), "--index", str(index_dir), "--quiet"],
            capture_output=True, text=True, env=CLI_ENV, cwd=REPO, preexec_fn=_file_size_limit(limit),
        )
        assert out.returncode == 9, out.stderr
        assert "ディスクがいっぱいです" in out.stderr and "Traceback" not in out.stdout + out.stderr
        line = log_line(out.stdout)
        assert line["status"] == "error" and line["exit_code"] == 9
        if where == "chunk file":
            assert str(index_dir / "chunks") in out.stderr  # names the file it could not write
        settings = hash_settings(index_dir)
        check_index(settings, a, final=False)  # the previous index, whole
        hits = search(open_index(settings), "7Bモデルは4bit量子化で約4GBのメモリで動く", k=3)
        assert hits and Path(hits[0].chunk.path).name == "keep1.md"
        run = Ingestor(settings, index_dir).run([corpus_dir])
        assert run.documents == len(b) and not run.skipped
        check_index(settings, b, final=True)
    finally:
        big.unlink(missing_ok=True)
