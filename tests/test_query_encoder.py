"""Questions embedded through the frozen graph get the vectors `encode` gives (real model)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.index import query_encoder
from pipeline.settings import Settings

pytestmark = pytest.mark.slow

QUESTIONS = [
    "8世紀に日本の首都はどこでしたか。",
    "Ollamaの既定のポートは何番？",
    "東",
    # Longer than every probe the graph was checked on.
    "平城京から長岡京、そして平安京へと都が移った理由を、当時の政治と寺院勢力の関係から説明してください。" * 6,
]


@pytest.fixture(scope="module")
def embedder():
    from pipeline.index.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(Settings())


def _encode(embedder, text):
    return embedder.model.encode([embedder.query_prefix + text], normalize_embeddings=True)[0]


def test_from_the_second_question_on_queries_run_frozen_with_the_same_vectors(embedder):
    first = embedder.embed_query(QUESTIONS[0])
    assert embedder.query_path == "direct"
    np.testing.assert_allclose(first, _encode(embedder, QUESTIONS[0]), atol=1e-5)
    for q in QUESTIONS:
        v = embedder.embed_query(q)
        assert embedder.query_path == "frozen"
        assert v.shape == (embedder.dim,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
        np.testing.assert_allclose(v, _encode(embedder, q), atol=1e-5)


def test_a_graph_that_does_not_reproduce_encode_is_not_used(embedder, monkeypatch):
    monkeypatch.setattr(query_encoder, "TOLERANCE", -1.0)  # no graph can pass the probes now
    assert query_encoder.FrozenQueryEncoder.build(embedder.model, embedder.query_prefix) is None


def test_a_model_that_cannot_be_traced_keeps_the_direct_path(embedder, monkeypatch):
    import torch

    def refuse(*a, **k):
        raise RuntimeError("tracing unsupported")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    assert query_encoder.FrozenQueryEncoder.build(embedder.model, embedder.query_prefix) is None
    v = query_encoder.encode_one(embedder.model, embedder.query_prefix + QUESTIONS[1])
    np.testing.assert_allclose(v, _encode(embedder, QUESTIONS[1]), atol=1e-5)
