"""Searching while an ingest runs sees one complete generation, never a mixture.

A forked child alternates the corpus between versions A and B (B deletes, changes and
adds files) and ingests after each switch, while this process opens the index again and
again. Every snapshot it opens must be exactly A or exactly B: its chunks are verbatim
slices of the version its manifest lists (doc_hash matching), its chunk IDs, BM25 IDs
and documents are those of that one manifest, and its search hits come from it alone.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import IndexNotFound
from pipeline.index.search import search
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import hash_settings

ROUNDS = 8  # ingests by the writer: A, B, A, B, …
QUERIES = ("量子化 メモリ", "既定のポート", "削除される文書", "評価 引用", "版B 追記")


def _version(v: str) -> dict[str, str]:
    """File name -> text. B deletes old*, changes mod*, adds new*; keep* never change."""
    topics = ["量子化とメモリ", "Ollamaの既定のポート", "BM25と形態素", "検索拡張生成", "評価と引用"]
    files: dict[str, str] = {}
    for i, topic in enumerate(topics):
        files[f"keep{i}.md"] = f"# {topic}\n\n" + "".join(f"{topic}について{j}番目の説明です。" for j in range(12)) + "\n"
    for i in range(4):
        extra = "".join(f"版{v}の{k}番目の追記。" for k in range(6 if v == "B" else 3))
        files[f"mod{i}.txt"] = f"変更されるメモ{i}\n" + "".join(f"設定{i}の値を確かめる文{j}。" for j in range(8)) + extra + "\n"
    names = ("old", 3) if v == "A" else ("new", 2)
    for i in range(names[1]):
        files[f"{names[0]}{i}.org"] = (
            f"#+TITLE: {names[0]}{i}\n* 見出し\n"
            + "".join(f"版{v}だけにある文書{i}の{j}番目の文。" for j in range(10))
            + ("この文書は版Bで削除される。" if v == "A" else "")
            + "\n"
        )
    return files


VERSIONS = {v: _version(v) for v in "AB"}


def _write(folder: Path, v: str) -> None:
    files = VERSIONS[v]
    for f in folder.iterdir():
        if f.name not in files:
            f.unlink()
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text("utf-8") != text:
            path.write_text(text, "utf-8")


def _writer(index_dir: str, folder: str, rounds: int, observed) -> None:
    """Forked child: switch the corpus and ingest, `rounds` times.

    After each commit it waits until the reader has opened that generation once, then
    goes straight on: every generation is seen, and every ingest runs under readers,
    however fast or slow this machine is.
    """
    os.environ.pop("RAG_FAULT_AT", None)
    ingestor = Ingestor(hash_settings(Path(index_dir)), Path(index_dir))
    for r in range(rounds):
        _write(Path(folder), "AB"[r % 2])
        ingestor.run([Path(folder)], wait=60)
        deadline = time.time() + 120
        while observed.value < r + 1 and time.time() < deadline:
            time.sleep(0.005)


def _search_and_check(snap, expected, version: str) -> int:
    n = 0
    for q in QUERIES:
        for retriever in ("bm25", "dense", "hybrid"):
            for h in search(snap, q, k=5, retriever=retriever):
                c = h.chunk
                text, digest = expected[version][c.path]
                assert c.id in snap.chunks and c.doc_hash == digest and text[c.start : c.end] == c.text
                n += 1
    return n


def _reader(index_dir: str, folder: str) -> None:
    """Forked child, like a `rag search` started mid-ingest: a fresh process and Chroma client."""
    import traceback

    try:
        snap = open_index(hash_settings(Path(index_dir)))
        expected = _expected(Path(folder))
        _search_and_check(snap, expected, check_snapshot(snap, expected))
    except IndexNotFound:
        sys.exit(2)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)


def _expected(folder: Path) -> dict[str, dict[str, tuple[str, str]]]:
    """version -> {path: (text, sha256 of the bytes)}."""
    return {
        v: {str(folder / n): (t, hashlib.sha256(t.encode("utf-8")).hexdigest()) for n, t in files.items()}
        for v, files in VERSIONS.items()
    }


def check_snapshot(snap, expected) -> str:
    """Assert `snap` is exactly version A or B, whole; returns which."""
    docs = snap.manifest.documents
    hashes = {p: e.hash for p, e in docs.items()}
    version = next((v for v, files in expected.items() if hashes == {p: h for p, (_, h) in files.items()}), None)
    assert version, f"generation {snap.manifest.generation} mixes versions: {sorted(hashes)}"
    files = expected[version]
    live = [cid for e in docs.values() for cid in e.chunk_ids]
    assert len(live) == len(set(live))
    chunks = snap.chunks
    assert set(chunks) == set(live), "snapshot chunks are not the manifest's"
    assert sorted(snap.bm25.ids) == sorted(live), "BM25 is not the manifest's"
    for cid, c in chunks.items():
        text, digest = files[c.path]
        assert c.doc_hash == digest == docs[c.path].hash, f"{cid}: doc_hash of another version"
        assert text[c.start : c.end] == c.text, f"{cid}: not a verbatim slice of {c.path} ({version})"
    assert {p: d.hash for p, d in snap.documents.items()} == hashes
    for p, d in snap.documents.items():
        assert d.text == files[p][0][d.body_start :]
    return version


@pytest.fixture(scope="module")
def forks():
    from tests.test_faults import FORK_PRELOAD

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([*FORK_PRELOAD, "tests.test_consistency"])
    return ctx


def test_search_during_ingests_sees_one_complete_generation(forks, tmp_path):
    from pipeline.index.store import ChromaStore

    folder = tmp_path / "notes"
    folder.mkdir()
    index_dir = tmp_path / "index"
    settings = hash_settings(index_dir)
    expected = _expected(folder)
    observed = forks.Value("i", 0)  # the newest generation this process has checked
    store = ChromaStore(settings, index_dir)  # one long-lived client, as a notebook or a server holds
    writer = forks.Process(target=_writer, args=(str(index_dir), str(folder), ROUNDS, observed))
    writer.start()

    seen: dict[int, str] = {}
    checked = hits_checked = 0
    readers = []
    short_of_vectors = 0  # snapshots whose live chunks were not all in Chroma at that moment
    deadline = time.time() + 240
    while writer.is_alive() and time.time() < deadline:
        try:
            snap = open_index(settings)
        except IndexNotFound:  # before the first commit
            time.sleep(0.02)
            continue
        snap._store = store
        version = check_snapshot(snap, expected)
        seen[snap.manifest.generation] = version
        observed.value = max(observed.value, snap.manifest.generation)
        hits_checked += _search_and_check(snap, expected, version)
        short_of_vectors += len(store.existing(list(snap.chunks))) < len(snap.chunks)
        if checked % 4 == 0:
            readers.append(forks.Process(target=_reader, args=(str(index_dir), str(folder))))
            readers[-1].start()
        checked += 1
    writer.join(60)
    assert writer.exitcode == 0, "the writer failed"
    for r in readers:
        r.join(60)
    assert all(r.exitcode in (0, 2) for r in readers), [r.exitcode for r in readers]
    # The final state is B (ROUNDS is even) and complete.
    final = open_index(settings)
    assert check_snapshot(final, expected) == "B"
    assert ChromaStore(settings, index_dir).all_ids() == set(final.chunks)
    # The loop really raced the writer: it saw several generations of both versions.
    assert sorted(seen) == list(range(1, ROUNDS + 1)), seen
    assert [seen[g] for g in sorted(seen)] == ["AB"[(g - 1) % 2] for g in sorted(seen)]
    assert checked >= 5 and hits_checked > 0
    print(json.dumps({
        "snapshots_checked": checked, "generations_seen": len(seen), "hits_checked": hits_checked,
        "reader_processes": len(readers), "short_of_vectors": short_of_vectors,
    }))


def _bump(notes: Path, i: int) -> None:
    (notes / "ollama.md").write_text(f"# Ollama\n\nOllamaの既定のポートは11434です。改訂{i}。\n", "utf-8")


def test_a_reader_on_an_older_generation_can_still_load_it_after_two_more_ingests(fresh_index, notes):
    index_dir = Path(fresh_index.index_dir)
    Ingestor(fresh_index, index_dir).run([notes])
    old = open_index(fresh_index)  # manifest read; chunks, BM25 and documents load lazily
    for i in range(2):
        _bump(notes, i)
        Ingestor(fresh_index, index_dir).run([notes])
    assert open_index(fresh_index).manifest.generation == old.manifest.generation + 2
    assert any("11434です。\n" in c.text for c in old.chunks.values())
    assert old.bm25.ids and old.documents
    assert search(old, "既定のポート", k=3, retriever="bm25")


def test_superseded_snapshots_are_removed_once_the_grace_period_is_over(fresh_index, notes, monkeypatch):
    import pipeline.ingest.sync as sync

    index_dir = Path(fresh_index.index_dir)
    monkeypatch.setattr(sync, "SNAPSHOT_GRACE_S", 0)
    for i in range(4):
        _bump(notes, i)
        Ingestor(fresh_index, index_dir).run([notes])
    names = sorted(p.name for p in (index_dir / "snapshots").iterdir())
    assert names == ["gen-000003", "gen-000004"]
