"""`rag ask --backend openai` end to end against a real OpenAI-compatible server:
llama.cpp's own (`python -m llama_cpp.server`, llama-cpp-python's [server] extra)
serving the embedded GGUF on 127.0.0.1. vLLM, LM Studio and hosted APIs speak the
same protocol; this is how a user moves generation off the machine. The error cases a
real server cannot be made to produce stay in test_backends.py (canned handlers)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DEMO

pytestmark = pytest.mark.slow

QUESTION = "Ollamaの既定のポート番号は？"
FACT = "11434"
SOURCE = "ollama-setup.org"  # corpora/demo: the note that gives Ollama's port
N_CTX = 4096  # the retrieve prompt (3 chunks of ≤ 200 tokens + instructions) fits with room
READY_S = 180  # loading 1.1 GB from a cold page cache on a busy 2-core machine
ASK_S = 300
# Both `rag` processes read this (the working directory is the test's tmp dir): the
# model-free hashing embedder, a small retrieve prompt and a short answer.
RAG_TOML = f"""\
embed_model = "hash:256"
chunk_tokens = 200
top_k = 3
answer_tokens = 96
openai_context = {N_CTX}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's RAG_* variables (RAG_CACHE_DIR stays: it
    says where the prepared models are), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RAG_") or k.upper() == "RAG_CACHE_DIR"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def server_log(path: Path) -> str:
    text = path.read_text("utf-8", errors="replace") if path.exists() else ""
    return text[-4000:] or "(empty)"


@pytest.fixture
def gguf() -> Path:
    from pipeline.models.gguf import embedded_gguf_path
    from pipeline.settings import default_cache_dir

    path = embedded_gguf_path(default_cache_dir())
    if not path.with_suffix(".verified").exists():
        pytest.skip(f"embedded GGUF not prepared at {path}: run `python -m pipeline.models prepare` (CI does)")
    return path


@pytest.fixture
def openai_server(gguf, tmp_path):
    """llama.cpp's OpenAI-compatible server on a free loopback port; yields its base URL
    and log file. Always stopped at the end, whatever the test did."""
    port = free_port()
    log = tmp_path / "llama-server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(N_CTX), "--n_threads", "2", "--n_threads_batch", "2",
    ]
    with log.open("wb") as sink:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=clean_env(), cwd=tmp_path)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        _wait_ready(proc, base_url + "/models", log)
        yield base_url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Poll ``GET /v1/models`` (answered once the model is loaded) until it answers,
    the server exits, or the deadline passes."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    deadline = time.monotonic() + READY_S
    while True:
        try:
            with opener.open(url, timeout=2) as resp:
                if resp.status == 200 and json.load(resp).get("data"):
                    return
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode} before answering {url}:\n{server_log(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"llama_cpp.server did not answer {url} within {READY_S} s:\n{server_log(log)}")
        time.sleep(0.5)


def rag(cwd: Path, *args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=clean_env(**env), timeout=timeout,
    )


@pytest.mark.timeout(READY_S + ASK_S + 120)
def test_rag_ask_through_llama_cpp_openai_server_answers_with_a_citation(openai_server, tmp_path):
    base_url, log = openai_server
    work = tmp_path / "work"
    work.mkdir()
    (work / "rag.toml").write_text(RAG_TOML, "utf-8")
    index = work / "index"
    ingest = rag(work, "ingest", str(DEMO), "--index", str(index), "--quiet", "--no-prefix", timeout=300)
    assert ingest.returncode == 0, ingest.stderr

    try:
        out = rag(
            work, "ask", QUESTION, "--backend", "openai", "--mode", "retrieve", "--index", str(index), "--json",
            timeout=ASK_S, RAG_OPENAI_BASE_URL=base_url,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rag ask did not finish within {ASK_S} s; server log:\n{server_log(log)}")
    assert out.returncode == 0, f"{out.stderr}\nserver log:\n{server_log(log)}"
    data = json.loads(out.stdout)
    print(data["raw_answer"], [s["verdict"] for s in data["sentences"]])

    assert data["backend"] == "openai"
    assert data["mode"] == "retrieve"
    assert FACT in data["answer"], data["raw_answer"]
    cited = [s["path"] for s in data["sources"] if s["cited"]]
    assert any(Path(p).name == SOURCE for p in cited), cited
    assert "POST /v1/chat/completions" in log.read_text("utf-8", errors="replace")  # the real server answered
