"""The CLI face: every command has help with an example, and imports stay light."""

import subprocess
import sys

import pytest

import pipeline
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


def test_public_names_are_exported_sorted():
    assert pipeline.__all__ == sorted(pipeline.__all__)
    for name in pipeline.__all__:
        assert hasattr(pipeline, name)


def test_missing_index_exits_3_with_a_japanese_message(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "search", "質問", "--index", str(tmp_path / "none")],
        capture_output=True, text=True,
    )
    assert out.returncode == 3
    assert "rag ingest" in out.stderr
