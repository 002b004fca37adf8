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
