"""Incremental ingest: idempotence, edits, deletions, bad files, the lock, crash recovery."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import IndexLocked, IndexNotFound
from pipeline.index.search import search
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import REPO, hash_settings


def ingest(settings, *paths, **kw):
    return Ingestor(settings, Path(settings.index_dir)).run([Path(p) for p in paths], **kw)


def chroma_count(settings):
    from pipeline.index.store import ChromaStore

    return ChromaStore(settings, Path(settings.index_dir)).count()


def test_second_run_embeds_nothing_and_keeps_the_count(fresh_index, notes):
    first = ingest(fresh_index, notes)
    assert (first.added, first.embedded_chunks > 0) == (3, True)
    before = chroma_count(fresh_index)
    second = ingest(fresh_index, notes)
    assert (second.added, second.changed, second.deleted, second.unchanged) == (0, 0, 0, 3)
    assert second.embedded_chunks == 0
    assert chroma_count(fresh_index) == before


def test_touching_a_file_without_changing_it_embeds_nothing(fresh_index, notes):
    ingest(fresh_index, notes)
    f = notes / "ollama.md"
    os.utime(f, (time.time() + 10, time.time() + 10))
    again = ingest(fresh_index, notes)
    assert again.embedded_chunks == 0 and again.unchanged == 3


def test_edit_reembeds_only_that_file_and_deletion_leaves_search(fresh_index, notes):
    ingest(fresh_index, notes)
    (notes / "ollama.md").write_text("# Ollama\n\nOllamaの既定のポートは11434から変わっていない。\n", "utf-8")
    (notes / "rag.org").unlink()
    run = ingest(fresh_index, notes)
    assert (run.changed, run.deleted, run.unchanged) == (1, 1, 1)
    assert run.changed_paths == [str(notes / "ollama.md")]
    index = open_index(fresh_index)
    assert {Path(c.path).name for c in index.chunks.values()} == {"ollama.md", "sjis.txt"}
    for retriever in ("bm25", "dense", "hybrid"):
        hits = search(index, "検索拡張生成 RAG 文書 根拠 ポート", k=10, retriever=retriever)
        assert hits, retriever  # the two files left still match
        assert all("rag.org" not in h.chunk.path for h in hits)
    # Chroma holds exactly the live chunks: the old version's vectors are gone.
    assert chroma_count(fresh_index) == len(index.chunks)


def test_bad_files_are_skipped_and_named_and_good_ones_indexed(fresh_index, notes):
    (notes / "empty.md").write_text("", "utf-8")
    (notes / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    run = ingest(fresh_index, notes)
    skipped = {Path(s["path"]).name: s["reason"] for s in run.skipped}
    assert set(skipped) == {"empty.md", "binary.txt"}
    assert run.added == 3


def test_a_file_that_turns_bad_keeps_its_previous_version(fresh_index, notes):
    ingest(fresh_index, notes)
    (notes / "ollama.md").write_bytes(b"\x00\x01\x02" * 100)
    run = ingest(fresh_index, notes)
    assert [Path(s["path"]).name for s in run.skipped] == ["ollama.md"]
    index = open_index(fresh_index)
    assert any("11434" in c.text for c in index.chunks.values())


def test_offsets_and_lines_point_back_into_the_files(fresh_index, notes):
    from pipeline.ingest.readers import read_document

    ingest(fresh_index, notes)
    chunks = list(open_index(fresh_index).chunks.values())
    assert {Path(c.path).name for c in chunks} == {"ollama.md", "rag.org", "sjis.txt"}
    for chunk in chunks:
        doc = read_document(Path(chunk.path))
        assert doc.text[chunk.start : chunk.end] == chunk.text
        lines = doc.text.split("\n")
        assert chunk.text.split("\n")[0] in lines[chunk.line_start - 1]


def test_searching_a_missing_index_says_what_to_do(tmp_path):
    with pytest.raises(IndexNotFound, match="rag ingest"):
        open_index(hash_settings(tmp_path / "nothing"))


def test_a_second_ingest_waits_or_exits_with_a_clear_message(fresh_index, notes):
    from filelock import FileLock

    Path(fresh_index.index_dir).mkdir(parents=True)
    with FileLock(str(Path(fresh_index.index_dir) / ".lock")):
        with pytest.raises(IndexLocked, match="実行中"):
            ingest(fresh_index, notes)
    assert ingest(fresh_index, notes).added == 3


# no LLM: ingest skips the long-context preparation (tests/test_long_context.py)
CLI_ENV = {**os.environ, "RAG_EMBED_MODEL": "hash:256", "RAG_CHUNK_TOKENS": "120", "RAG_LLM_BACKEND": "extractive"}


def rag(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
        env=CLI_ENV, cwd=REPO, **kw,
    )


def test_cli_reports_lock_with_exit_code_4(fresh_index, notes):
    from filelock import FileLock

    Path(fresh_index.index_dir).mkdir(parents=True)
    with FileLock(str(Path(fresh_index.index_dir) / ".lock")):
        out = rag("ingest", str(notes), "--index", fresh_index.index_dir, "--quiet")
    assert out.returncode == 4
    assert "実行中" in out.stderr


def test_killed_ingest_leaves_previous_index_usable_and_next_run_completes(fresh_index, notes, tmp_path):
    assert rag("ingest", str(notes), "--index", fresh_index.index_dir, "--json").returncode == 0
    before = open_index(fresh_index)
    live_before = set(before.chunks)
    # Many new files so the run is still embedding when killed.
    for i in range(40):
        (notes / f"extra{i}.md").write_text(f"# 追加{i}\n\n" + f"追加の文書{i}番です。" * 30 + "\n", "utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ingest", str(notes), "--index", fresh_index.index_dir, "--quiet"],
        env=CLI_ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    chunk_dir = Path(fresh_index.index_dir) / "chunks"
    n0 = len(list(chunk_dir.glob("*/*.json")))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(chunk_dir.glob("*/*.json"))) < n0 + 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The previous state is intact: same live chunks, still searchable.
    after_kill = open_index(fresh_index)
    assert set(after_kill.chunks) == live_before
    assert search(after_kill, "ポート", k=3, retriever="hybrid")
    # The next run completes the work, and leaves no orphan or duplicate vector.
    out = rag("ingest", str(notes), "--index", fresh_index.index_dir, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["added"] == 40 and summary["documents"] == 43
    final = open_index(fresh_index)
    assert chroma_count(fresh_index) == len(final.chunks) == summary["chunks"]


def test_chunks_of_many_files_are_embedded_together_and_reported(tmp_path):
    """Chunks are embedded in calls across files (sorted by length inside the embedder, batches
    pad less), and the reporter hears every embedded chunk (the progress bar's chunks/s)."""
    from pipeline.index.embedder import HashEmbedder

    class Counting(HashEmbedder):
        def __init__(self):
            super().__init__(256)
            self.calls: list[int] = []

        def embed_passages(self, texts):
            self.calls.append(len(texts))
            return super().embed_passages(texts)

    class Heard:
        def __init__(self):
            self.chunks = 0

        def start(self, total): ...
        def advance(self, path): ...
        def log(self, message): ...

        def embedded(self, chunks):
            self.chunks += chunks

    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(12):
        (notes / f"n{i:02d}.md").write_text(f"# メモ{i}\n\n富士山の話{i}。標高は3776メートル。\n", "utf-8")
    settings = hash_settings(tmp_path / "idx")
    embedder, heard = Counting(), Heard()
    summary = Ingestor(settings, tmp_path / "idx", embedder=embedder).run([notes], reporter=heard)
    assert summary.embedded_chunks == sum(embedder.calls) == heard.chunks >= 12
    assert len(embedder.calls) < 12  # not one call per file
    assert chroma_count(settings) == summary.chunks  # every queued vector reached Chroma
    assert [r.chunk.path for r in search(open_index(settings), "富士山の話7", k=1)] == [str(notes / "n07.md")]


def test_near_full_and_short_chunks_are_embedded_in_separate_calls(tmp_path, monkeypatch):
    """Short chunks (the ends of sections) wait in their own queue: a batch of one padded to
    the longest of the other would cost the embedder for nothing."""
    from pipeline.index.embedder import HashEmbedder
    from pipeline.ingest import sync

    class Recording(HashEmbedder):
        def __init__(self):
            super().__init__(256)
            self.calls: list[list[str]] = []

        def embed_passages(self, texts):
            self.calls.append(list(texts))
            return super().embed_passages(texts)

    monkeypatch.setattr(sync, "EMBED_BATCH", 3)
    notes = tmp_path / "notes"
    notes.mkdir()
    long_body = "富士山は静岡県と山梨県にまたがる活火山で、標高は3776メートル、日本で最も高い山である。" * 2
    for i in range(6):
        # n0a, n0b, n1a, …: the two kinds arrive interleaved
        (notes / f"n{i}a.md").write_text(f"# 長{i}\n\n{long_body}\n", "utf-8")
        (notes / f"n{i}b.md").write_text(f"# 短{i}\n\n短いメモ{i}。\n", "utf-8")
    settings = hash_settings(tmp_path / "idx")  # chunk_tokens 120 characters: near-full from 96
    embedder = Recording()
    summary = Ingestor(settings, tmp_path / "idx", embedder=embedder).run([notes])
    assert summary.embedded_chunks == 12 == sum(map(len, embedder.calls))
    assert all(len(t) >= 96 for t in embedder.calls[0])
    assert all(len(t) < 40 for t in embedder.calls[1])
    for call in embedder.calls:
        assert len({len(t) >= 96 for t in call}) == 1  # never mixed
    assert chroma_count(settings) == 12
