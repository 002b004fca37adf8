"""`rag status`: what an index holds, and which files changed on disk since the last ingest."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import IndexNotFound
from pipeline.index.manifest import Manifest
from pipeline.index.snapshot import open_index
from pipeline.ingest.status import index_status
from pipeline.ingest.sync import Ingestor
from pipeline.tokens import ANSWER_TEMPLATE_TOKENS, QUESTION_TOKENS
from tests.conftest import REPO, hash_settings

# The answer prompt around the sources, as `rag status` reserves it (no LLM tokenizer there).
PROMPT = ANSWER_TEMPLATE_TOKENS + QUESTION_TOKENS


def ingest(settings, *paths):
    return Ingestor(settings, Path(settings.index_dir)).run([Path(p) for p in paths])


def changed(settings):
    return {k: sorted(Path(p).name for p in v) for k, v in index_status(settings)["changed_since_ingest"].items()}


def test_counts_match_the_manifest_the_snapshot_and_the_last_run(fresh_index, notes):
    run = ingest(fresh_index, notes)
    status = index_status(fresh_index)
    manifest = Manifest.load(Path(fresh_index.index_dir))
    assert status["documents"] == run.documents == len(manifest.documents) == 3
    assert status["chunks"] == run.chunks == len(open_index(fresh_index).chunks)
    assert status["generation"] == manifest.generation == 1
    assert status["formats"] == {"markdown": 1, "org": 1, "text": 1}
    assert status["encodings"] == {"utf-8": 2, "cp932": 1}
    assert status["embed_model"] == "hash:256" and status["chunk_tokens"] == 120
    assert status["characters"] > 0 and status["embedding_tokens"] > 0 and status["size_bytes"] > 0
    assert status["last_ingest"]["added"] == 3
    assert status["changed_since_ingest"] == {"modified": [], "deleted": [], "new": []}


def test_modified_deleted_and_new_files_are_listed_until_the_next_ingest(fresh_index, notes):
    ingest(fresh_index, notes)
    (notes / "ollama.md").write_text("# Ollama\n\nポートは11434のままです。追記しました。\n", "utf-8")
    (notes / "rag.org").unlink()
    (notes / "sub").mkdir()
    (notes / "sub" / "新しいメモ.md").write_text("# 新規\n\n新しく書いたメモです。\n", "utf-8")
    (notes / "ignored.png").write_bytes(b"\x89PNG")  # not a supported suffix: never "new"
    assert changed(fresh_index) == {"modified": ["ollama.md"], "deleted": ["rag.org"], "new": ["新しいメモ.md"]}
    # The counts still describe the index as it is, not the disk.
    assert index_status(fresh_index)["documents"] == 3

    run = ingest(fresh_index, notes)
    assert (run.added, run.changed, run.deleted) == (1, 1, 1)
    assert changed(fresh_index) == {"modified": [], "deleted": [], "new": []}
    assert index_status(fresh_index)["documents"] == 3


def test_a_touched_but_unchanged_file_is_modified_until_an_ingest_settles_it(fresh_index, notes):
    ingest(fresh_index, notes)
    later = time.time() + 5
    os.utime(notes / "sjis.txt", (later, later))
    assert changed(fresh_index)["modified"] == ["sjis.txt"]
    assert ingest(fresh_index, notes).embedded_chunks == 0
    assert changed(fresh_index)["modified"] == []


def test_a_file_the_last_ingest_skipped_is_not_new_until_it_changes(fresh_index, notes):
    (notes / "broken.txt").write_bytes(b"\x00\x01binary" * 50)
    run = ingest(fresh_index, notes)
    assert [Path(s["path"]).name for s in run.skipped] == ["broken.txt"]
    assert changed(fresh_index)["new"] == []
    # Fixed on disk after the ingest: now it is new work for the next one.
    (notes / "broken.txt").write_text("直したメモです。\n", "utf-8")
    later = time.time() + 5
    os.utime(notes / "broken.txt", (later, later))
    assert changed(fresh_index)["new"] == ["broken.txt"]


def test_files_outside_the_ingested_folders_are_not_new(fresh_index, notes, tmp_path):
    ingest(fresh_index, notes / "ollama.md", notes / "rag.org")
    (tmp_path / "elsewhere.md").write_text("# 別の場所\n\n関係ないメモ。\n", "utf-8")
    assert changed(fresh_index) == {"modified": [], "deleted": [], "new": []}


def test_fits_long_context_follows_the_window_of_the_configured_backend(tmp_path, notes):
    index_dir = tmp_path / "index"
    ingest(hash_settings(index_dir), notes)
    small = index_status(hash_settings(index_dir))
    assert small["fits_long_context"] is True
    assert 0 < small["llm_tokens_estimated"] < 1000
    assert small["long_context_window"] == 32768
    # A window whose usable part (window - prompt - answer_tokens) is smaller than the corpus.
    tight = hash_settings(index_dir, llm_context=small["llm_tokens_estimated"] + PROMPT + 256 - 1)
    assert index_status(tight)["fits_long_context"] is False
    exact = hash_settings(index_dir, llm_context=small["llm_tokens_estimated"] + PROMPT + 256)
    assert index_status(exact)["fits_long_context"] is True
    # Another backend is judged by its own window.
    window = small["llm_tokens_estimated"] + PROMPT + 256 - 1
    api = hash_settings(index_dir, llm_backend="openai", openai_context=window)
    assert index_status(api)["long_context_window"] == window
    assert index_status(api)["fits_long_context"] is False
    roomy = hash_settings(index_dir, llm_backend="openai", llm_context=1000, openai_context=window + 1)
    assert index_status(roomy)["fits_long_context"] is True


def test_a_bigger_corpus_stops_fitting_the_window(tmp_path, notes):
    index_dir = tmp_path / "index"
    settings = hash_settings(index_dir, llm_context=4000)
    ingest(settings, notes)
    assert index_status(settings)["fits_long_context"] is True
    for i in range(6):
        (notes / f"長文{i}.md").write_text(f"# 長文{i}\n\n" + "検索拡張生成の評価について詳しく書いたメモです。\n" * 40, "utf-8")
    ingest(settings, notes)
    status = index_status(settings)
    assert status["documents"] == 9
    assert status["llm_tokens_estimated"] > 4000 - PROMPT - 256
    assert status["fits_long_context"] is False


def test_status_of_a_missing_index_says_to_ingest_first(tmp_path):
    with pytest.raises(IndexNotFound, match="rag ingest"):
        index_status(hash_settings(tmp_path / "nothing"))


def test_cli_status_json_and_text(fresh_index, notes):
    env = {**os.environ, "RAG_EMBED_MODEL": "hash:256", "RAG_CHUNK_TOKENS": "120"}
    ingest(fresh_index, notes)
    (notes / "rag.org").unlink()
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "status", "--index", fresh_index.index_dir, "--json"],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["documents"] == 3 and data["changed_since_ingest"]["deleted"] == [str(notes / "rag.org")]
    text = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "status", "--index", fresh_index.index_dir],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    assert text.returncode == 0, text.stderr
    assert "文書 3 /" in text.stdout and "削除 1" in text.stdout and "rag.org" in text.stdout
