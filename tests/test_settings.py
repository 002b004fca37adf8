"""Settings: every knob declared with a description; a typo, a bad value or a broken
rag.toml exits 2 with one Japanese line per problem; `rag config` says where each value
came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner

from pipeline.answer.backends import BACKENDS
from pipeline.errors import ConfigError
from pipeline.settings import Settings, describe_settings, load_settings

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("no_user_config")


def rag(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`rag ARGS` in a fresh interpreter, in `cwd`, with no RAG_* variable but `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RAG_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO), clean.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd, capture_output=True, text=True, env={**clean, **env}, timeout=120,
    )


def config_error(**overrides) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(**overrides)
    assert err.value.exit_code == 2
    return str(err.value)


# ------------------------------------------------------------ typos and bad values


def test_typo_in_rag_toml_exits_2_with_the_closest_key_and_no_traceback(tmp_path):
    (tmp_path / "rag.toml").write_text("ollama_contxt = 1\n", "utf-8")
    out = rag(["status"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "エラー: rag.toml: ollama_contxt は設定にありません。もしかして ollama_context ?"
    ]
    assert "Traceback" not in out.stdout + out.stderr


def test_unknown_backend_names_the_file_the_value_and_the_allowed_ones(tmp_path):
    (tmp_path / "rag.toml").write_text('llm_backend = "olama"\n', "utf-8")
    message = config_error()
    assert message == 'rag.toml: llm_backend = "olama" は使えません。使える値: ' + ", ".join(BACKENDS)


def test_a_word_where_a_number_belongs_is_named_as_not_an_integer(tmp_path):
    (tmp_path / "rag.toml").write_text('chunk_tokens = "many"\n', "utf-8")
    assert config_error() == 'rag.toml: chunk_tokens = "many" は整数ではありません'


def test_a_number_out_of_range_names_the_range(tmp_path):
    (tmp_path / "rag.toml").write_text("chunk_tokens = 5000\n", "utf-8")
    assert config_error() == "rag.toml: chunk_tokens = 5000 は範囲外です。使える値: 32 以上、512 以下"


def test_each_problem_gets_its_own_line(tmp_path):
    (tmp_path / "rag.toml").write_text('top_k = "x"\nfusion = "best"\nretriver = "bm25"\n', "utf-8")
    lines = config_error().splitlines()
    assert len(lines) == 3
    assert any("top_k" in line and "整数ではありません" in line for line in lines)
    assert any("fusion" in line and "anchored, minmax, rrf, zscore" in line for line in lines)
    assert any("もしかして retriever ?" in line for line in lines)


def test_a_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("RAG_TOP_K", "abc")
    assert config_error() == '環境変数 RAG_TOP_K: top_k = "abc" は整数ではありません'


def test_a_mistyped_environment_variable_is_an_error_with_the_closest_name(monkeypatch):
    monkeypatch.setenv("RAG_OLAMA_URL", "http://127.0.0.1:11434")
    assert config_error() == "環境変数 RAG_OLAMA_URL は設定にありません。もしかして RAG_OLLAMA_URL ?"


def test_rag_variables_that_are_not_settings_are_left_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_FAULT_AT", "embed:1")
    monkeypatch.setenv("RAG_CITATION_CACHE", str(tmp_path))
    monkeypatch.setenv("RAG_NOTEBOOK_INDEX", "indexes/demo")
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    assert load_settings().cache_dir == tmp_path / "cache"


def test_a_rag_toml_that_is_not_toml_names_the_file_and_the_line(tmp_path):
    (tmp_path / "rag.toml").write_text('top_k = 3\nllm_backend = "ollama\n', "utf-8")
    message = config_error()
    assert message.startswith("rag.toml: 2 行目")
    assert "TOML として読めません" in message and "\n" not in message


def test_an_unknown_override_is_reported_as_coming_from_the_command_line():
    assert config_error(top_kk=3).startswith("コマンドライン: top_kk は設定にありません。もしかして top_k ?")


def test_reranker_must_name_module_and_factory(tmp_path):
    (tmp_path / "rag.toml").write_text('reranker = "myrerank"\n', "utf-8")
    assert "パッケージ.モジュール:関数名" in config_error()


# ------------------------------------------------------------ every knob declared


def test_every_setting_has_a_description():
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert missing == []


def test_fusion_names_are_the_fusion_rules():
    from pipeline.index.fusion import FUSIONS

    assert sorted(get_args(Settings.model_fields["fusion"].annotation)) == sorted(FUSIONS)


def test_backend_names_are_the_backends():
    assert get_args(Settings.model_fields["llm_backend"].annotation) == BACKENDS


def test_the_old_openai_context_window_name_is_gone():
    assert "openai_context_window" not in Settings.model_fields
    assert "openai_context_window" in config_error(openai_context_window=4096)


def test_openai_context_in_rag_toml_reaches_the_openai_backend(tmp_path):
    from pipeline.answer.backends.openai_compat import OpenAICompatBackend

    (tmp_path / "rag.toml").write_text('openai_context = 131072\nopenai_model = "m"\n', "utf-8")
    assert OpenAICompatBackend(load_settings()).info.context_window == 131072


def test_ollama_knobs_in_rag_toml_reach_the_ollama_backend(tmp_path):
    from pipeline.answer.backends.ollama import OllamaBackend

    (tmp_path / "rag.toml").write_text(
        'ollama_context = 4096\nollama_raw = true\nollama_keep_alive = "5m"\nllm_gen_tokens_per_s = 33.0\n', "utf-8"
    )
    backend = OllamaBackend(load_settings())
    assert (backend.num_ctx, backend.raw, backend.keep_alive) == (4096, True, "5m")
    assert backend.info.context_window == 4096 and backend.info.gen_tokens_per_s == 33.0


def test_fusion_and_reranker_candidates_reach_the_retriever(tmp_path):
    from pipeline.index.retriever import HybridRetriever

    (tmp_path / "rag.toml").write_text('fusion = "rrf"\nreranker_candidates = 7\n', "utf-8")
    retriever = HybridRetriever.from_settings(load_settings(), index=object())
    assert (retriever.fusion, retriever.rerank_candidates, retriever.reranker) == ("rrf", 7, None)
    (tmp_path / "rag.toml").write_text('reranker = "tests.test_retrieval:make_reverse_reranker"\nrerank = true\n',
                                       "utf-8")
    retriever = HybridRetriever.from_settings(load_settings(), index=object())
    assert type(retriever.reranker).__name__ == "ReverseReranker"


# ------------------------------------------------------------ where values come from


def test_describe_settings_names_the_source_of_each_value(tmp_path, monkeypatch):
    (tmp_path / "rag.toml").write_text('fusion = "rrf"\ntop_k = 3\n', "utf-8")
    monkeypatch.setenv("RAG_TOP_K", "8")
    values = {v.key: v for v in describe_settings(index_dir="elsewhere")}
    assert set(values) == set(Settings.model_fields)
    assert (values["fusion"].value, str(values["fusion"].source)) == ("rrf", "rag.toml")
    assert (values["top_k"].value, str(values["top_k"].source)) == (8, "環境変数 RAG_TOP_K")
    assert (values["index_dir"].value, str(values["index_dir"].source)) == ("elsewhere", "コマンドライン")
    assert str(values["chunk_tokens"].source) == "既定値"


def test_rag_config_prints_one_line_per_setting_with_its_source(tmp_path):
    from pipeline.cli import app

    (tmp_path / "rag.toml").write_text('ollama_context = 4096\nopenai_api_key = "sk-secret"\n', "utf-8")
    out = CliRunner().invoke(app, ["config"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert len(lines) == len(Settings.model_fields)
    assert "ollama_context          = 4096  # rag.toml" in lines
    assert "sk-secret" not in out.output


def test_rag_config_json_gives_value_source_and_description(tmp_path):
    from pipeline.cli import app

    (tmp_path / "rag.toml").write_text('llm_backend = "extractive"\n', "utf-8")
    out = CliRunner().invoke(app, ["config", "--json", "--index", "idx"])
    assert out.exit_code == 0, out.output
    data = {item["key"]: item for item in json.loads(out.output)}
    assert data["llm_backend"]["value"] == "extractive"
    assert data["llm_backend"]["source"] == {"kind": "file", "name": "rag.toml"}
    assert data["index_dir"]["source"] == {"kind": "override", "name": None}
    assert data["top_k"]["source"] == {"kind": "default", "name": None}
    assert all(item["description"] for item in data.values())
