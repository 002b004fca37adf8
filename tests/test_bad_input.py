"""Bad-input suite: one ingest over a folder of broken files next to good notes.

Every bad file is either skipped with its path and a reason, or indexed with a named
warning (lossy but readable); nothing crashes, and every good note in the same run is
indexed. The whole folder goes through one real `rag ingest --json` run. Tests run
as root, so the run drops CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH first (`setpriv`):
the kernel then refuses to open the chmod-000 file, as it would for a normal user.
Cases that need a moment between listing and reading are run in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.index.manifest import Manifest
from pipeline.index.search import search
from pipeline.index.snapshot import open_index
from pipeline.ingest import readers
from pipeline.ingest.sync import Ingestor
from tests.conftest import REPO, hash_settings

GOOD = {
    "ollama.md": "# Ollama\n\nOllamaの既定のポートは11434です。\nモデルは ollama pull で取得する。\n",
    "rag.org": "#+TITLE: RAGメモ\n* 検索拡張生成\n<2025-03-11 Tue 08:28>\nRAGは検索した文書を根拠にして回答する手法です。\n",
    "量子化.txt": "量子化メモ\n7Bモデルは4bit量子化で約4GBのメモリで動く。\n",
    "sjis.txt": "シフトJISのメモ\n全角数字１２３も読める。\n",  # written as cp932
    "sub/深い/見出し.md": "# 深い階層\n\n§3.2 を参照。フォルダの奥にあるメモです。\n",
}
SENTENCE = "検索拡張生成は検索した文書を根拠に答える。"
NO_PUNCT = "句読点のない行が続くメモ 形態素の切れ目で分ける 見出しも無い"
BIG_MB = 50  # over the default max_file_mb (20)


def _nul_late() -> bytes:
    # NUL bytes past the 8 KB sniff window of the reader.
    return (SENTENCE * 200).encode() + b"\x00\x00" + (SENTENCE + "\n").encode()


# name -> (bytes or builder, expectation)
#   ("skip", reason)       skipped, the reason contains this text
#   ("index", warning)     indexed; warning None = no warning, else the warning contains it
#   ("either", None)       indexed or skipped with a reason: a judgement call of the reader
CASES = {
    "binary.txt": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, ("skip", readers.BINARY)),
    "image.md": (bytes(range(256)) * 64, ("skip", "バイナリ")),
    "nul_early.md": (b"# NUL\n\n" + SENTENCE.encode() + b"\x00" + SENTENCE.encode(), ("skip", readers.BINARY)),
    "nul_late.txt": (_nul_late(), ("either", None)),
    "truncated_utf8.md": (("# 途中で切れた\n\n" + SENTENCE * 3).encode() + "語".encode()[:2], ("index", "truncated utf-8")),
    "truncated_middle.txt": ((SENTENCE * 2).encode()[:-2] + (SENTENCE * 2).encode(), ("skip", readers.UNDECODABLE)),
    "mixed_halves.txt": ((SENTENCE * 5).encode("utf-8") + (SENTENCE * 5).encode("cp932"), ("skip", readers.UNDECODABLE)),
    "mixed_few_bytes.txt": ((SENTENCE * 50).encode() + "メモ".encode("cp932") + (SENTENCE * 50).encode(), ("index", "U+FFFD")),
    "latin1.txt": ("café résumé naïve\n".encode("latin-1") * 5, ("skip", readers.UNDECODABLE)),
    "empty.md": (b"", ("skip", readers.EMPTY)),
    "blank.txt": (b" \n\n\t \n", ("skip", readers.BLANK)),
    "front_matter_only.md": (b"---\ntitle: x\n---\n", ("skip", readers.NO_BODY)),
    "no_text.html": (b"<html><body><script>var a=1;</script></body></html>", ("skip", readers.HTML_NO_TEXT)),
    "fake.pdf": (b"this is not a pdf at all", ("skip", readers.NOT_PDF)),
    "huge.txt": (None, ("skip", "max_file_mb")),
    "long_line.md": (("# 長い行\n\n" + SENTENCE * 4000).encode(), ("index", None)),  # one 84k-char line
    "no_punctuation.txt": (("\n".join(NO_PUNCT + f" 行{i}" for i in range(300))).encode(), ("index", None)),
    "no_punctuation_one_line.txt": (((NO_PUNCT + " ") * 600).encode(), ("index", None)),
    "unreadable.md": (("# 読めない\n\n" + SENTENCE).encode(), ("skip", readers.NO_PERMISSION)),
    "fifo.md": (None, ("skip", readers.NOT_REGULAR)),
    "loop_a.md": (None, ("skip", readers.SYMLINK_LOOP)),  # loop_a.md -> loop_b.md -> loop_a.md
    "loop_b.md": (None, ("skip", readers.SYMLINK_LOOP)),
    "dangling.md": (None, ("skip", readers.NOT_FOUND)),  # -> a file that does not exist
    "loopdir": (None, ("skip", readers.SYMLINK_LOOP)),  # a folder symlink to its parent
}


def build_folder(folder: Path) -> None:
    for name, text in GOOD.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("cp932" if name == "sjis.txt" else "utf-8"))
    for name, (data, _) in CASES.items():
        if data is not None:
            (folder / name).write_bytes(data)
    with open(folder / "huge.txt", "wb") as f:
        line = ("大きなファイルの一行です。" * 20 + "\n").encode()
        f.write(line * (BIG_MB * 1_000_000 // len(line) + 1))
    (folder / "unreadable.md").chmod(0)
    os.mkfifo(folder / "fifo.md")
    (folder / "loop_a.md").symlink_to("loop_b.md")
    (folder / "loop_b.md").symlink_to("loop_a.md")
    (folder / "dangling.md").symlink_to("nowhere/missing.md")
    (folder / "sub" / "loopdir").symlink_to("..")


def _as_unprivileged(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd]


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """The folder, and the summary of one `rag ingest --json` over it (exit code checked)."""
    root = tmp_path_factory.mktemp("bad")
    folder = root / "notes"
    folder.mkdir()
    build_folder(folder)
    index_dir = root / "index"
    # no LLM: ingest skips the long-context preparation (tests/test_long_context.py)
    env = {**os.environ, "RAG_EMBED_MODEL": "hash:256", "RAG_CHUNK_TOKENS": "500", "RAG_LLM_BACKEND": "extractive"}
    env.pop("RAG_FAULT_AT", None)
    cmd = [sys.executable, "-m", "pipeline.cli", "ingest", str(folder), "--index", str(index_dir), "--json"]
    out = subprocess.run(_as_unprivileged(cmd), capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]  # no crash
    summary = json.loads(out.stdout)
    yield folder, index_dir, summary
    (folder / "unreadable.md").chmod(0o644)


def _skipped(summary) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in summary["skipped"]:
        out.setdefault(Path(s["path"]).name, []).append(s["reason"])
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_file_is_named_with_a_reason_or_indexed_whole(name, bad_run):
    folder, index_dir, summary = bad_run
    kind, text = CASES[name][1]
    skipped = _skipped(summary)
    manifest = Manifest.load(index_dir)
    indexed = {Path(p).name for p in manifest.documents}
    warnings = {Path(w["path"]).name: w["warning"] for w in summary["warnings"]}
    if kind == "skip":
        assert name in skipped, f"{name} was not reported: {sorted(skipped)}"
        assert any(text in r for r in skipped[name]), skipped[name]
        assert name not in indexed
    elif kind == "index":
        assert name in indexed and name not in skipped
        if text is None:
            assert name not in warnings
        else:
            assert text in warnings[name]
        # Whole: every non-blank char of the body is in some chunk, and chunks are verbatim.
        snap = open_index(hash_settings(index_dir))
        path = str(folder / name)
        body = snap.documents[path]
        covered = [False] * len(body.text)
        for c in snap.chunks.values():
            if c.path == path:
                assert body.text[c.start - body.body_start : c.end - body.body_start] == c.text
                covered[c.start - body.body_start : c.end - body.body_start] = [True] * (c.end - c.start)
        assert all(ok or ch.isspace() for ok, ch in zip(covered, body.text)), f"{name}: text left out"
    else:
        assert (name in indexed) != (name in skipped)
        assert name in indexed or all(skipped[name])


def test_every_good_note_in_the_same_run_is_indexed_and_searchable(bad_run):
    folder, index_dir, summary = bad_run
    manifest = Manifest.load(index_dir)
    for name, text in GOOD.items():
        path = str(folder / name)
        assert path in manifest.documents, f"good note lost: {name}"
        data = (folder / name).read_bytes()
        assert manifest.documents[path].hash == hashlib.sha256(data).hexdigest()
    snap = open_index(hash_settings(index_dir))
    for query, name in (("既定のポート", "ollama.md"), ("量子化 メモリ", "量子化.txt"), ("全角数字", "sjis.txt"), ("深い階層", "見出し.md")):
        hits = search(snap, query, k=3, retriever="hybrid")
        assert any(Path(h.chunk.path).name == name for h in hits), (query, [h.chunk.path for h in hits])


def test_the_run_reports_exactly_the_bad_files_and_counts_add_up(bad_run):
    folder, index_dir, summary = bad_run
    expected_skips = {n for n, (_, (kind, _)) in CASES.items() if kind == "skip"}
    either = {n for n, (_, (kind, _)) in CASES.items() if kind == "either"}
    assert expected_skips <= set(_skipped(summary)) <= expected_skips | either
    indexed = summary["documents"]
    assert indexed == len(GOOD) + sum(kind == "index" for _, (kind, _) in CASES.values()) + len(either - set(_skipped(summary)))
    # No chunk is listed twice, and the summary agrees with the index.
    snap = open_index(hash_settings(index_dir))
    assert summary["chunks"] == len(snap.chunks) == len({(c.path, c.start, c.end) for c in snap.chunks.values()})


def test_a_second_run_changes_nothing_and_names_the_bad_files_again(bad_run, tmp_path):
    folder, index_dir, first = bad_run
    index_copy = tmp_path / "index"
    shutil.copytree(index_dir, index_copy)
    from pipeline.settings import Settings

    settings = Settings(index_dir=str(index_copy), embed_model="hash:256", chunk_tokens=500)
    again = Ingestor(settings, index_copy).run([folder])
    # This run is root with its privileges: the chmod-000 file is readable now, and new.
    assert (again.changed, again.deleted) == (0, 0)
    assert again.added == 1 and again.added_paths == [str(folder / "unreadable.md")]
    assert set(_skipped(again.to_dict())) == set(_skipped(first)) - {"unreadable.md"}


# ------------------------------------------------------------ in-process cases


def test_a_file_deleted_between_listing_and_stat_is_skipped_and_the_rest_indexed(fresh_index, notes, monkeypatch):
    import pipeline.ingest.sync as sync

    real_scan = sync.scan

    def scan_then_delete(paths):
        found = real_scan(paths)
        (notes / "rag.org").unlink()
        return found

    monkeypatch.setattr(sync, "scan", scan_then_delete)
    run = Ingestor(fresh_index, Path(fresh_index.index_dir)).run([notes])
    assert [(Path(s["path"]).name, s["reason"]) for s in run.skipped] == [("rag.org", readers.NOT_FOUND)]
    assert run.added == 2


def test_a_file_deleted_between_stat_and_read_is_skipped_and_the_rest_indexed(fresh_index, notes, monkeypatch):
    real_read = readers.read_document

    def delete_then_read(path):
        if Path(path).name == "ollama.md":
            Path(path).unlink()
        return real_read(path)

    monkeypatch.setattr(readers, "read_document", delete_then_read)
    run = Ingestor(fresh_index, Path(fresh_index.index_dir)).run([notes])
    assert [(Path(s["path"]).name, s["reason"]) for s in run.skipped] == [("ollama.md", readers.NOT_FOUND)]
    assert run.added == 2 and run.documents == 2


def test_an_indexed_file_that_vanishes_mid_run_keeps_its_previous_version_until_the_next_run(fresh_index, notes, monkeypatch):
    import pipeline.ingest.sync as sync

    Ingestor(fresh_index, Path(fresh_index.index_dir)).run([notes])
    (notes / "ollama.md").write_text("# Ollama\n\n書き換えた。\n", "utf-8")
    real_scan = sync.scan

    def scan_then_delete(paths):
        found = real_scan(paths)
        (notes / "ollama.md").unlink()
        return found

    monkeypatch.setattr(sync, "scan", scan_then_delete)
    run = Ingestor(fresh_index, Path(fresh_index.index_dir)).run([notes])
    assert [Path(s["path"]).name for s in run.skipped] == ["ollama.md"]
    assert any("11434" in c.text for c in open_index(fresh_index).chunks.values())
    monkeypatch.setattr(sync, "scan", real_scan)
    assert Ingestor(fresh_index, Path(fresh_index.index_dir)).run([notes]).deleted == 1


class _SmallLimit:
    """Settings with max_file_mb, before the lead adds the field to Settings."""

    def __init__(self, settings, max_file_mb):
        self._settings, self.max_file_mb = settings, max_file_mb

    def __getattr__(self, name):
        return getattr(self._settings, name)


def test_max_file_mb_is_a_setting_and_a_file_that_grows_past_it_keeps_its_previous_version(fresh_index, notes):
    index_dir = Path(fresh_index.index_dir)
    limited = _SmallLimit(fresh_index, 0.0002)  # 200 bytes
    run = Ingestor(limited, index_dir).run([notes])
    assert run.added == 3 and not run.skipped
    (notes / "rag.org").write_text((notes / "rag.org").read_text("utf-8") + "追記。" * 100, "utf-8")
    run = Ingestor(limited, index_dir).run([notes])
    assert [Path(s["path"]).name for s in run.skipped] == ["rag.org"]
    assert "max_file_mb" in run.skipped[0]["reason"] and "0.0002 MB" in run.skipped[0]["reason"]
    assert any("根拠にして回答" in c.text for c in open_index(fresh_index).chunks.values())
    # max_file_mb = 0 turns the limit off.
    assert Ingestor(_SmallLimit(fresh_index, 0), index_dir).run([notes]).changed == 1
