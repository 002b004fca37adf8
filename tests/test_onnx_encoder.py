"""The embedded model without torch: the light tokenizer, the ONNX export and its checks, dense vectors.

Fast tests use a small tokenizer built the way `pipeline.models.e5` builds the real one,
and hand-made files. Tests marked slow load the real model (prepared by `make setup`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.index.vectors import DenseVectors, unit_rows
from pipeline.models import e5_onnx
from pipeline.models.unigram import UnigramTokenizer

# ------------------------------------------------------------------ the light tokenizer

META = "\u2581"
TINY_PIECES = [
    ("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
    (META, -2.0), (META + "東京", -3.0), ("東京", -4.0), ("東", -6.0), ("京", -6.0), ("の", -2.5),
    ("ポート", -5.0), ("ポ", -8.0), ("ー", -7.0), ("ト", -7.0), ("は", -2.5), ("?", -3.0),
    (META + "GPU", -5.0), ("GPU", -5.5), ("G", -8.0), ("P", -8.0), ("U", -8.0),
    ("1", -6.0), ("2", -6.0), ("12", -5.0), ("7", -6.0), ("B", -7.0), ("7B", -6.5),
    ("都", -6.0), ("京都", -5.0), (META + "a", -4.0), ("a", -5.0), ("b", -5.0),
]
# full-width letters and digits, the ideographic space and the full-width question mark
# fold as the real charsmap folds them; U+0001 is removed
TINY_NORM = {ord("Ｇ"): "G", ord("Ｐ"): "P", ord("Ｕ"): "U", ord("１"): "1", ord("２"): "2",
             ord("７"): "7", ord("Ｂ"): "B", 0x3000: " ", ord("？"): "?", 0x01: ""}

TINY_TEXTS = [
    "東京のポートは?",
    "東京のポートは？",  # full-width ?
    "ＧＰＵ　７Ｂ",  # full-width letters and digits, ideographic space
    "GPU 12",
    "１２",
    "京都の東京",
    "猫犬鳥",  # unknown characters fuse into one <unk>
    "東猫犬京",
    "a  b   a",  # runs of spaces
    "  東京  ",  # leading and trailing spaces
    " ",
    "",
    "\x01",
    "a\x00b",
    "東京" * 20,  # longer than max_length: truncated
]


@pytest.fixture(scope="module")
def tiny():
    """(tokenizers.Tokenizer, UnigramTokenizer) for a small vocabulary, built like e5's."""
    from pipeline.models.e5 import build_tokenizer

    tok = build_tokenizer(
        {"pieces": [p for p, _ in TINY_PIECES], "scores": [s for _, s in TINY_PIECES],
         "norm": TINY_NORM, "bos": 0, "pad": 1, "eos": 2, "unk": 3}
    )
    tok.add_special_tokens(["<mask>"])
    return tok, UnigramTokenizer.from_tokenizer(tok, max_length=12)


def _library_ids(tok, text, max_length):
    ids = tok.encode(text).ids
    return ids if len(ids) <= max_length else ids[: max_length - 1] + ids[-1:]


@pytest.mark.parametrize("text", TINY_TEXTS)
def test_the_light_tokenizer_gives_the_ids_the_tokenizers_library_gives(tiny, text):
    tok, light = tiny
    assert light.encode(text) == _library_ids(tok, text, 12)


def test_the_light_tokenizer_survives_its_files(tiny, tmp_path):
    tok, light = tiny
    light.save(tmp_path)
    again = UnigramTokenizer.load(tmp_path)
    for text in TINY_TEXTS:
        assert again.encode(text) == _library_ids(tok, text, 12)


@pytest.mark.parametrize(
    "text",
    ["ｶﾞ", "e\u0301", "❤️", "👍🏻", "🇯🇵", "\u1100\u1161", "a\r\nb", "<s>", "x<mask>", "\u200d"],
)
def test_texts_whose_characters_may_join_go_to_the_library(tiny, text):
    """Grapheme clusters of several code points are normalized by their first code point
    (tokenizers' Precompiled); the light tokenizer leaves those texts to the library."""
    _, light = tiny
    assert light.encode("東京" + text) is None


def test_a_tokenizer_with_another_pipeline_is_refused():
    from tokenizers import Tokenizer, models

    with pytest.raises(ValueError, match="pipeline differs"):
        UnigramTokenizer.from_tokenizer(Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0)), 512)


# ------------------------------------------------------------------ files and markers


def test_the_word_embeddings_are_memory_mapped_from_safetensors(tmp_path):
    from safetensors.numpy import save_file

    matrix = np.arange(40, dtype=np.float32).reshape(10, 4)
    save_file({"other": np.ones(3, np.float32), e5_onnx.WORD_EMBEDDINGS: matrix}, str(tmp_path / "m.safetensors"))
    mapped = e5_onnx.word_embeddings(tmp_path / "m.safetensors")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped[[7, 2, 2]], matrix[[7, 2, 2]])


def _fake_model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / e5_onnx.EXPORT_DIR).mkdir(parents=True)
    for name in e5_onnx.MODEL_FILES:
        (model / name).write_text("{}" if name.endswith(".json") else "x")
    (model / e5_onnx.EXPORT_DIR / e5_onnx.GRAPH).write_bytes(b"graph")
    return model


def _write_marker(model: Path, **fields) -> None:
    marker = {**e5_onnx._facts(model), "stamps": e5_onnx._stamps(model), **fields}
    (model / e5_onnx.EXPORT_DIR / e5_onnx.MARKER).write_text(json.dumps(marker))


def test_an_export_is_redone_when_a_file_or_a_package_changed(tmp_path):
    model = _fake_model_dir(tmp_path)
    assert e5_onnx.stale_because(model, None) == "no export yet"
    _write_marker(model, accepted=True)
    assert e5_onnx.stale_because(model, e5_onnx.read_marker(model)) is None
    graph = model / e5_onnx.EXPORT_DIR / e5_onnx.GRAPH
    os.utime(graph, ns=(graph.stat().st_atime_ns, graph.stat().st_mtime_ns + 10**9))
    assert e5_onnx.stale_because(model, e5_onnx.read_marker(model)) == "a file changed since the export"
    _write_marker(model, accepted=True, onnxruntime="0.0.1")
    assert e5_onnx.stale_because(model, e5_onnx.read_marker(model)).startswith("onnxruntime changed")


def test_an_export_that_failed_for_want_of_onnx_is_retried_once_onnx_is_there(tmp_path):
    model = _fake_model_dir(tmp_path)
    _write_marker(model, accepted=False, onnx=None, reason="ONNX export failed: ModuleNotFoundError: onnx")
    assert e5_onnx.stale_because(model, e5_onnx.read_marker(model)).startswith("onnx changed")
    _write_marker(model, accepted=True, onnx=None)  # running an accepted export needs no onnx
    assert e5_onnx.stale_because(model, e5_onnx.read_marker(model)) is None


def test_a_refused_export_is_not_retried_and_says_why(tmp_path, monkeypatch):
    model = _fake_model_dir(tmp_path)
    _write_marker(model, accepted=False, reason="cosine 0.9 to the torch model on probe 'query: 東'")
    monkeypatch.setattr(e5_onnx, "export_onnx", lambda *a, **k: pytest.fail("exported again"))
    with pytest.raises(e5_onnx.ExportRefused, match="cosine 0.9"):
        e5_onnx.open_encoder(model)


# ------------------------------------------------------------------ dense vectors of a snapshot


def test_dense_search_ranks_every_chunk_by_cosine():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(50, 8)).astype(np.float32) * rng.uniform(0.5, 3, size=(50, 1)).astype(np.float32)
    ids = [f"c{i}" for i in range(50)]
    vectors = DenseVectors(ids, unit_rows(matrix))
    query = rng.normal(size=8)
    cos = (matrix @ query) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    want = [ids[i] for i in np.argsort(-cos, kind="stable")]
    for k in (1, 7, 50, 80):
        hits = vectors.search(query, k)
        assert [h.chunk_id for h in hits] == want[:k]
        np.testing.assert_allclose([h.score for h in hits], np.sort(cos)[::-1][:k], atol=1e-6)


def test_equal_scores_keep_chunk_order():
    vectors = DenseVectors(["a", "b", "c"], unit_rows(np.array([[0, 1], [1, 0], [1, 0]], np.float32)))
    assert [h.chunk_id for h in vectors.search([1, 0], 3)] == ["b", "c", "a"]


def test_dense_search_over_the_snapshot_finds_what_chroma_finds(tmp_path, notes):
    from pipeline.index.snapshot import open_index
    from pipeline.ingest.sync import Ingestor
    from tests.conftest import hash_settings

    settings = hash_settings(tmp_path / "index")
    Ingestor(settings, Path(settings.index_dir)).run([notes])
    index = open_index(settings)
    assert index.vectors is not None and len(index.vectors.ids) == len(index.chunks)
    for question in ("Ollamaの既定のポートは？", "量子化したモデルのメモリ", "検索拡張生成とは"):
        vector = index.embedder.embed_query(question)
        ours = index.vectors.search(vector, 5)
        chroma = index.store.query(vector, 5, allowed=set(index.chunks))
        assert [h.chunk_id for h in ours] == [h.chunk_id for h in chroma]
        assert [h.score for h in ours] == pytest.approx([h.score for h in chroma], abs=1e-6)


# ------------------------------------------------------------------ the real model (slow)

QUESTIONS = [
    "Ollamaの既定のポートは？",
    "８世紀に日本の首都はどこでしたか。",
    "ポート１１４３４で動くサーバーは？",
    "ＧＰＵ　７Ｂモデルに必要なメモリは？",
    "⚠️ 注意が必要な設定は？",  # a variation selector: the library path
]


@pytest.fixture(scope="module")
def embedded():
    """(the embedded model's folder, its torch embedder, its ONNX embedder)."""
    from pipeline.index.embedder import OnnxE5Embedder, SentenceTransformerEmbedder
    from pipeline.models.e5 import embedded_e5_path
    from pipeline.settings import Settings

    settings = Settings()
    model_dir = embedded_e5_path(settings.cache_dir)
    onnx = OnnxE5Embedder(settings, e5_onnx.open_encoder(model_dir))
    return model_dir, SentenceTransformerEmbedder(settings), onnx


@pytest.mark.slow
def test_the_export_matches_the_torch_model_within_1e_4_on_the_probes(embedded):
    model_dir, torch_embedder, _ = embedded
    assert e5_onnx.read_marker(model_dir)["accepted"]
    worst, problem = e5_onnx.check_export(model_dir, e5_onnx.export_dir(model_dir), torch_embedder.model)
    assert problem is None
    assert 1 - worst <= e5_onnx.TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("question", QUESTIONS)
def test_a_question_embeds_the_same_on_onnx_and_on_torch(embedded, question):
    _, torch_embedder, onnx = embedded
    assert onnx.query_path == "onnx"
    v, w = onnx.embed_query(question), torch_embedder.embed_query(question)
    assert v.shape == w.shape == (384,)
    assert float(v @ w) >= 1 - e5_onnx.TOLERANCE


@pytest.mark.slow
def test_full_width_digits_are_tokens_not_unknowns(embedded):
    _, torch_embedder, onnx = embedded
    text = "query: ８世紀に日本の首都はどこでしたか。"
    light = onnx.encoder.unigram.encode(text)
    assert light == torch_embedder.model.tokenizer(text)["input_ids"]
    assert onnx.encoder.unigram.unk_id not in light


@pytest.mark.slow
def test_passages_embed_the_same_on_onnx_and_on_torch(embedded):
    from tests.conftest import DEMO

    _, torch_embedder, onnx = embedded
    texts = [p for f in sorted(DEMO.iterdir()) if f.suffix in (".md", ".org") for p in f.read_text("utf-8").split("\n\n")]
    texts = [t for t in texts if t.strip()][:48]
    cos = (onnx.embed_passages(texts) * torch_embedder.embed_passages(texts)).sum(1)
    assert float(cos.min()) >= 1 - e5_onnx.TOLERANCE
    # The chunker counts with the embedder's tokenizer: the same counts, the same chunks.
    assert [onnx.count_tokens(t) for t in texts] == [torch_embedder.count_tokens(t) for t in texts]


@pytest.mark.slow
def test_the_light_tokenizer_agrees_with_the_library_on_the_demo_notes(embedded):
    from tests.conftest import DEMO, EVALDATA

    _, _, onnx = embedded
    encoder = onnx.encoder
    texts = [p for f in sorted(DEMO.iterdir()) if f.is_file() for p in f.read_bytes().decode("utf-8", "replace").split("\n")]
    seeds = EVALDATA.parent / "seeds" / "notes-llm-ja.txt"  # a real user's note, where present
    texts += seeds.read_text("utf-8").split("\n") if seeds.exists() else []
    queries = EVALDATA / "jaquad_dev" / "queries.jsonl"
    texts += [json.loads(line)["question"] for line in queries.read_text("utf-8").splitlines()[:500]]
    light = [encoder.unigram.encode("passage: " + t) for t in texts]
    library = encoder.library_ids(["passage: " + t for t in texts])
    compared = [(a, b) for a, b in zip(light, library) if a is not None]
    assert len(compared) > 0.95 * len(texts)
    assert all(a == b for a, b in compared)


@pytest.mark.slow
def test_the_int8_graph_is_close_to_the_torch_vectors_and_ranks_as_fp32_does(embedded):
    from pipeline.index.embedder import OnnxE5Embedder
    from pipeline.settings import Settings
    from tests.conftest import DEMO

    model_dir, _, onnx = embedded
    int8 = e5_onnx.read_marker(model_dir)["int8"]
    assert int8["accepted"] and int8["min_cosine"] >= e5_onnx.INT8_MIN_COSINE
    quantized = OnnxE5Embedder(Settings(embed_precision="int8"), e5_onnx.open_encoder(model_dir, "int8"))
    assert quantized.name.endswith("#int8") and quantized.name != onnx.name  # an index and a cache of its own
    texts = [p for f in sorted(DEMO.iterdir()) if f.suffix in (".md", ".org") for p in f.read_text("utf-8").split("\n\n")]
    texts = [t for t in texts if t.strip()][:48]
    a, b = onnx.embed_passages(texts), quantized.embed_passages(texts)
    assert float((a * b).sum(1).min()) >= e5_onnx.INT8_MIN_COSINE
    # fp32's best paragraph stays among int8's three best for every question, and is its best for most.
    same = 0
    for q in QUESTIONS:
        best = int((a @ onnx.embed_query(q)).argmax())
        ranked = list(np.argsort(-(b @ quantized.embed_query(q))))
        assert best in ranked[:3], q
        same += ranked[0] == best
    assert same >= 0.75 * len(QUESTIONS)


def _cache_with_the_model(tmp_path: Path, model_dir: Path, copy_export: bool) -> tuple[Path, Path]:
    """A cache folder whose embedded-model folder links to the real one's files (the export
    folder copied when asked, its weights linked): (cache, model folder)."""
    cache = tmp_path / "cache"
    mine = cache / model_dir.relative_to(model_dir.parents[1])
    mine.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.name != e5_onnx.EXPORT_DIR:
            (mine / f.name).symlink_to(f)
    if copy_export:
        (mine / e5_onnx.EXPORT_DIR).mkdir()
        for f in e5_onnx.export_dir(model_dir).iterdir():
            target = mine / e5_onnx.EXPORT_DIR / f.name
            target.symlink_to(f) if f.suffix == ".data" else shutil.copy2(f, target)
    return cache, mine


@pytest.mark.slow
def test_an_export_that_does_not_match_torch_is_refused_and_the_embedder_says_why(embedded, tmp_path, caplog):
    from pipeline.index.embedder import load_embedder
    from pipeline.settings import Settings

    model_dir, _, _ = embedded
    cache, mine = _cache_with_the_model(tmp_path, model_dir, copy_export=False)
    marker = e5_onnx.export_onnx(mine, tolerance=-1.0)  # no export can pass now
    assert not marker["accepted"] and "cosine" in marker["reason"]
    embedder = load_embedder(Settings(cache_dir=cache))
    assert embedder.query_path == "direct"
    assert "cosine" in embedder.query_path_reason
    assert "cosine" in caplog.text


@pytest.mark.slow
def test_a_damaged_export_is_refused_and_the_embedder_stays_on_torch(embedded, tmp_path):
    from pipeline.index.embedder import load_embedder
    from pipeline.settings import Settings

    model_dir, torch_embedder, _ = embedded
    cache, mine = _cache_with_the_model(tmp_path, model_dir, copy_export=True)
    graph = mine / e5_onnx.EXPORT_DIR / e5_onnx.GRAPH
    st = graph.stat()
    graph.write_bytes(b"\0" * st.st_size)  # same size and mtime: only loading it tells
    os.utime(graph, ns=(st.st_atime_ns, st.st_mtime_ns))
    embedder = load_embedder(Settings(cache_dir=cache))
    assert embedder.query_path == "direct"
    assert "unreadable" in embedder.query_path_reason
    question = QUESTIONS[1]
    np.testing.assert_allclose(embedder.embed_query(question), torch_embedder.embed_query(question), atol=1e-5)
