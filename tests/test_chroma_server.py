"""A real `chroma run` server on 127.0.0.1: ingest and query through HttpClient."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.index.search import search
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import hash_settings

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = free_port()
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    deadline = time.time() + 90
    while True:  # poll the heartbeat, don't sleep a fixed time
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("chroma server did not start")
            time.sleep(0.3)
    yield port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_ingest_and_search_through_a_chroma_server(chroma_server, tmp_path, notes):
    settings = hash_settings(tmp_path / "idx", chroma_host="127.0.0.1", chroma_port=chroma_server)
    run = Ingestor(settings, Path(settings.index_dir)).run([notes])
    assert run.added == 3
    assert not (Path(settings.index_dir) / "chroma").exists()  # vectors live in the server
    index = open_index(settings)
    from pipeline.index.store import ChromaStore

    assert ChromaStore(settings, Path(settings.index_dir)).count() == len(index.chunks)
    hits = search(index, "Ollamaの既定のポート", k=3, retriever="dense")
    assert hits and hits[0].chunk.path.endswith("ollama.md")


def test_unreachable_chroma_server_fails_with_a_clear_message(tmp_path, notes):
    from pipeline.errors import BackendUnavailable

    settings = hash_settings(tmp_path / "idx", chroma_host="127.0.0.1", chroma_port=free_port())
    with pytest.raises(BackendUnavailable, match="Chroma"):
        Ingestor(settings, Path(settings.index_dir)).run([notes])
