import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "corpora" / "demo"
EVALDATA = REPO.parent / "shared" / "evaldata"


def hash_settings(index_dir: Path, **kw):
    """Settings with the model-free hashing embedder: fast plumbing tests."""
    from pipeline.settings import Settings

    return Settings(**{"index_dir": str(index_dir), "embed_model": "hash:256", "chunk_tokens": 120, **kw})


@pytest.fixture
def no_user_config(tmp_path, monkeypatch):
    """Settings from the test's own values and the defaults: the working directory is
    `tmp_path` (no rag.toml) and the developer's RAG_* variables are gone (RAG_CACHE_DIR
    stays: it says where the prepared models are)."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("RAG_") and name.upper() != "RAG_CACHE_DIR":
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def fresh_index(tmp_path):
    """An empty index directory and settings pointing at it."""
    index_dir = tmp_path / "index"
    return hash_settings(index_dir)


@pytest.fixture
def notes(tmp_path):
    """A small folder of Japanese notes the test may edit."""
    d = tmp_path / "notes"
    d.mkdir()
    (d / "ollama.md").write_text(
        "# Ollama\n\nOllamaの既定のポートは11434です。\nモデルは ollama pull で取得する。\n", "utf-8"
    )
    (d / "rag.org").write_text(
        "#+TITLE: RAGメモ\n* 検索拡張生成\n<2025-03-11 Tue 08:28>\n"
        "RAGは検索した文書を根拠にして回答する手法です。\n", "utf-8"
    )
    (d / "sjis.txt").write_bytes("量子化メモ\n7Bモデルは4bit量子化で約4GBのメモリで動く。\n".encode("cp932"))
    return d


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`rag ARGS` in this process through the CLI's entry point: (exit code, stdout, stderr)."""
    import sys

    from pipeline.cli import main

    monkeypatch.setattr(sys, "argv", ["rag", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
