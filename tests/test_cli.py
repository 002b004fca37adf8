"""The CLI face: every command has help with an example, and imports stay light."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import app

HEAVY = ("torch", "sentence_transformers", "chromadb", "llama_cpp", "fugashi", "transformers", "llama_index")


def test_importing_the_cli_loads_no_heavy_library():
    code = "import sys, pipeline.cli; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _commands(typer_app, prefix=""):
    import typer.main

    group = typer.main.get_command(typer_app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            for sub_name, sub in cmd.commands.items():
                yield f"{prefix}{name} {sub_name}", sub
        else:
            yield prefix + name, cmd


@pytest.mark.parametrize("name,cmd", list(_commands(app)))
def test_every_command_has_help_with_an_example(name, cmd):
    assert cmd.help and "例: rag " in cmd.help, name


def test_missing_index_exits_3_with_a_japanese_message(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "search", "質問", "--index", str(tmp_path / "none")],
        capture_output=True, text=True,
    )
    assert out.returncode == 3
    assert "rag ingest" in out.stderr


# ------------------------------------------------------------ the one wrapper (main)


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`rag ARGS` through `main()`, in-process: (exit code, stderr)."""
    from pipeline import cli

    monkeypatch.setattr(sys, "argv", ["rag", *args])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_a_log(no_user_config, monkeypatch, capsys):
    import pipeline.ingest.status

    def broken(settings):
        raise RuntimeError("壊れた\n二行目")

    monkeypatch.setenv("RAG_CACHE_DIR", str(no_user_config / "cache"))
    monkeypatch.setattr(pipeline.ingest.status, "index_status", broken)
    code, err = run_main(monkeypatch, capsys, "status")
    assert code == 1
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("予期しないエラーが起きました: RuntimeError: 壊れた 二行目。詳細: ")
    log = Path(line.split("詳細: ", 1)[1])
    assert log.parent == no_user_config / "cache" / "logs"
    text = log.read_text("utf-8")
    assert "Traceback" in text and "RuntimeError: 壊れた" in text and "in broken" in text


def test_a_crash_log_goes_to_a_temp_folder_when_the_cache_cannot_be_written(no_user_config, monkeypatch, capsys):
    import tempfile

    import pipeline.ingest.status

    (no_user_config / "file").write_text("not a folder")
    monkeypatch.setenv("RAG_CACHE_DIR", str(no_user_config / "file"))
    monkeypatch.setattr(tempfile, "tempdir", str(no_user_config / "tmp"))
    (no_user_config / "tmp").mkdir()
    monkeypatch.setattr(pipeline.ingest.status, "index_status", lambda s: 1 / 0)
    code, err = run_main(monkeypatch, capsys, "status")
    assert code == 1
    log = Path(err.strip().split("詳細: ", 1)[1])
    assert log.parent == no_user_config / "tmp" and "ZeroDivisionError" in log.read_text("utf-8")


def test_interrupting_a_command_exits_130(no_user_config, monkeypatch, capsys):
    import pipeline.ingest.status

    def interrupted(settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.ingest.status, "index_status", interrupted)
    code, err = run_main(monkeypatch, capsys, "status")
    assert code == 130 and "中断しました" in err and "Traceback" not in err


def test_a_bad_setting_exits_2_through_the_wrapper(no_user_config, monkeypatch, capsys):
    (no_user_config / "rag.toml").write_text('citation_policy = "silent"\n', "utf-8")
    code, err = run_main(monkeypatch, capsys, "config")
    assert code == 2
    assert err.strip() == 'エラー: rag.toml: citation_policy = "silent" は使えません。使える値: annotate, strip, refuse'


def test_a_usage_error_is_clicks_message_and_exit_2_not_a_crash(no_user_config, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "search", "質問", "--retriever", "fuzzy")
    assert code == 2
    assert "bm25 | dense | hybrid" in err and "予期しない" not in err and "Traceback" not in err


# ------------------------------------------------------------ a one-shot search, fresh interpreter

# A question typed once should not wait for these: the embedded model runs on onnxruntime
# (pipeline.models.e5_onnx) and dense search reads the snapshot's vectors, not Chroma.
NOT_ON_THE_QUERY_PATH = ("torch", "transformers", "sentence_transformers", "llama_index", "chromadb")

_SEARCH_AND_LIST_MODULES = """
import json, sys
from pipeline import cli
sys.argv = ["rag", "search", *sys.argv[1:], "--json"]
try:
    cli.main()
except SystemExit as exit_:
    if exit_.code:
        raise
print("MODULES " + json.dumps(sorted(m for m in %r if m in sys.modules)))
""" % (NOT_ON_THE_QUERY_PATH,)


def search_in_fresh_interpreter(index_dir: Path, question: str, k: int, env: dict[str, str]):
    """`rag search QUESTION -k K --index INDEX_DIR --json` in a new Python: (hits, heavy modules loaded)."""
    import json
    import os

    out = subprocess.run(
        [sys.executable, "-c", _SEARCH_AND_LIST_MODULES, question, "-k", str(k), "--index", str(index_dir)],
        capture_output=True, text=True, env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    body, _, modules = out.stdout.rpartition("MODULES ")
    return json.loads(body), json.loads(modules)


def _where(rows):
    """(file, start, end) of each hit: `rag search --json` rows (paths shown relative to the
    working directory) or ScoredChunks."""
    if rows and isinstance(rows[0], dict):
        return [(Path(r["path"]).resolve(), r["start"], r["end"]) for r in rows]
    return [(Path(h.chunk.path).resolve(), h.chunk.start, h.chunk.end) for h in rows]


def test_a_one_shot_search_loads_no_torch_transformers_llama_index_or_chroma(no_user_config, notes):
    from pipeline.index.search import search
    from pipeline.index.snapshot import open_index
    from pipeline.ingest.sync import Ingestor
    from tests.conftest import hash_settings

    settings = hash_settings(no_user_config / "index")
    Ingestor(settings, Path(settings.index_dir)).run([notes])
    question = "Ollamaの既定のポートは？"
    hits, loaded = search_in_fresh_interpreter(
        Path(settings.index_dir), question, 3, {"RAG_EMBED_MODEL": "hash:256", "RAG_CHUNK_TOKENS": "120"}
    )
    assert loaded == []
    want = search(open_index(settings), question, k=3)
    assert hits and _where(hits) == _where(want)
    assert Path(hits[0]["path"]).name == "ollama.md"


@pytest.mark.slow
def test_a_one_shot_search_with_the_embedded_model_finds_what_the_torch_path_finds(no_user_config, notes):
    """An index embedded on torch (as every index before the ONNX export was), searched once
    from a fresh interpreter: no torch loaded, the torch path's chunks and scores."""
    from pipeline.index.embedder import SentenceTransformerEmbedder
    from pipeline.index.search import search
    from pipeline.index.snapshot import open_index
    from pipeline.ingest.sync import Ingestor
    from pipeline.settings import Settings

    settings = Settings(index_dir=str(no_user_config / "index"))
    torch_embedder = SentenceTransformerEmbedder(settings)
    Ingestor(settings, Path(settings.index_dir), embedder=torch_embedder).run([notes])
    for question in ("Ollamaの既定のポートは？", "７Ｂモデルに必要なメモリは？"):
        hits, loaded = search_in_fresh_interpreter(Path(settings.index_dir), question, 3, {})
        assert loaded == []
        want = search(open_index(settings, embedder=torch_embedder), question, k=3)
        assert hits and _where(hits) == _where(want)
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in want], abs=1e-4)
