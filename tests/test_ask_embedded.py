"""The embedded LLM answers questions about corpora/demo with citations to the right files."""

import pytest

from pipeline.answer.backends import load_backend
from pipeline.check import CitationChecker
from pipeline.answer.engine import Answerer, answer_to_dict
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import DEMO, hash_settings

pytestmark = pytest.mark.slow

QUESTIONS = [
    ("Ollamaのサーバーの既定のポート番号は？", "11434", "ollama-setup.org"),
    ("vLLMのサーバーが既定で待ち受けるポート番号は？", "8000", "vllm-serving.html"),
]


@pytest.fixture(scope="module")
def answerer(tmp_path_factory):
    idx = tmp_path_factory.mktemp("demo-index")
    settings = hash_settings(idx, top_k=3, chunk_tokens=300, llm_context=4096, answer_tokens=128)
    Ingestor(settings, idx).run([DEMO])
    return Answerer(settings, open_index(settings), load_backend(settings, "embedded"),
                    CitationChecker(settings, embedder=None))


@pytest.mark.parametrize("question,fact,filename", QUESTIONS)
def test_embedded_model_answers_with_a_citation_to_the_right_file(answerer, question, fact, filename):
    data = answer_to_dict(answerer.ask(question, mode="retrieve"))
    print(data["raw_answer"], [s["verdict"] for s in data["sentences"]])
    assert fact in data["raw_answer"]
    cited = [s["path"] for s in data["sources"] if s["cited"]]
    assert any(p.endswith(filename) for p in cited), cited
