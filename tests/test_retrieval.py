"""Retrieval: Japanese BM25 by lemma, deletions, fusion, the llama-index retriever, the eval runner."""

import json
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.evaluation.datasets import CorpusDoc
from pipeline.evaluation.retrieval import (
    doc_filename,
    evaluate_retrieval,
    render_document,
)
from pipeline.index.fusion import FUSIONS, fuse
from pipeline.index.search import search
from pipeline.index.snapshot import ScoredChunk, open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import EVALDATA, hash_settings


def ingest(settings, *paths):
    return Ingestor(settings, Path(settings.index_dir)).run([Path(p) for p in paths])


# ----------------------------------------------------------------- Japanese BM25 by lemma

VERB_NOTES = {
    "marathon.md": "# マラソン\n\n彼は毎朝、川沿いの道を十キロ走った。\n",
    "cooking.md": "# 料理\n\n鍋で野菜を煮込んでスープを作る。\n",
    "reading.md": "# 読書\n\n図書館で小説を借りて読んでいた。\n",
}

# (query with an inflected form, the file whose text has another form of that verb)
INFLECTED_QUERIES = [
    ("走ります", "marathon.md"),
    ("走らない", "marathon.md"),
    ("煮込んだ", "cooking.md"),
    ("作りました", "cooking.md"),
    ("読まれる", "reading.md"),
    ("借りたい", "reading.md"),
]


@pytest.fixture
def verb_index(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    for name, text in VERB_NOTES.items():
        (notes / name).write_text(text, "utf-8")
    settings = hash_settings(tmp_path / "index")
    ingest(settings, notes)
    return open_index(settings)


@pytest.mark.parametrize("query,expected", INFLECTED_QUERIES)
def test_bm25_finds_a_document_by_an_inflected_form_of_its_verb(verb_index, query, expected):
    hits = search(verb_index, query, k=3, retriever="bm25")
    assert hits, query
    assert Path(hits[0].chunk.path).name == expected
    # The surface form of the query is nowhere in the text: only the lemma matches.
    assert query not in hits[0].chunk.text


# ----------------------------------------------------------------- deletions


def test_deleted_document_disappears_from_bm25_and_dense_alike(fresh_index, notes):
    from pipeline.index.store import ChromaStore

    ingest(fresh_index, notes)
    index = open_index(fresh_index)
    gone = str(notes / "rag.org")
    query = "検索拡張生成 RAG 文書 根拠"
    assert any(h.chunk.path == gone for h in index.sparse(query, 10))
    assert any(h.chunk.path == gone for h in index.dense(query, 10))
    gone_ids = {c.id for c in index.chunks.values() if c.path == gone}

    (notes / "rag.org").unlink()
    ingest(fresh_index, notes)
    index = open_index(fresh_index)
    for retriever in ("bm25", "dense", "hybrid"):
        hits = search(index, query, k=10, retriever=retriever)
        assert all(h.chunk.path != gone for h in hits), retriever
    assert not ChromaStore(fresh_index, Path(fresh_index.index_dir)).existing(sorted(gone_ids))


# ----------------------------------------------------------------- fusion (pure)

SPARSE = [("a", 12.0), ("b", 7.5), ("c", 3.0)]
DENSE = [("c", 0.91), ("d", 0.88), ("a", 0.84), ("e", 0.80)]


@pytest.mark.parametrize("method", sorted(FUSIONS))
def test_fusion_with_one_retriever_empty_returns_the_others_ranking(method):
    assert [k for k, _ in fuse(method, SPARSE, [])] == ["a", "b", "c"]
    assert [k for k, _ in fuse(method, [], DENSE)] == ["c", "d", "a", "e"]
    assert fuse(method, [], []) == []


@pytest.mark.parametrize("method", sorted(FUSIONS))
def test_fusion_ranks_a_chunk_both_retrievers_put_first_on_top(method):
    both = [("x", 20.0), ("y", 5.0), ("z", 4.0)]
    dense = [("x", 0.9), ("z", 0.85), ("w", 0.84)]
    fused = fuse(method, both, dense)
    assert fused[0][0] == "x"
    assert {k for k, _ in fused} == {"x", "y", "z", "w"}
    assert [s for _, s in fused] == sorted((s for _, s in fused), reverse=True)


def test_unknown_fusion_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        fuse("borda", SPARSE, DENSE)
    for name in FUSIONS:
        assert name in str(err.value)
