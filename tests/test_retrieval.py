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
from pipeline.documents import ScoredChunk
from pipeline.index.snapshot import open_index
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


def index_of_notes(tmp_path, notes_by_name: dict[str, str]):
    """An index (hashing embedder) of the given notes."""
    notes = tmp_path / "notes"
    notes.mkdir()
    for name, text in notes_by_name.items():
        (notes / name).write_text(text, "utf-8")
    settings = hash_settings(tmp_path / "index")
    ingest(settings, notes)
    return open_index(settings)


@pytest.fixture
def verb_index(tmp_path):
    return index_of_notes(tmp_path, VERB_NOTES)


@pytest.mark.parametrize("query,expected", INFLECTED_QUERIES)
def test_bm25_finds_a_document_by_an_inflected_form_of_its_verb(verb_index, query, expected):
    hits = search(verb_index, query, k=3, retriever="bm25")
    assert hits, query
    assert Path(hits[0].chunk.path).name == expected
    # The surface form of the query is nowhere in the text: only the lemma matches.
    assert query not in hits[0].chunk.text


def test_chunks_are_indexed_with_the_tokens_queries_get(verb_index):
    """Ingest and search tokenize alike (lemmas + character bigrams): a mismatch once cost
    BM25 2 points of nDCG@10 on JSQuAD while every test above still passed."""
    from pipeline.index.bm25 import bm25_tokens
    from pipeline.documents import embed_header
    from pipeline.ingest.sync import read_chunk_file

    entries = list(verb_index.manifest.documents.values())
    assert len(entries) == len(VERB_NOTES)
    for entry in entries:
        chunks, tokens, _ = read_chunk_file(verb_index.index_dir, entry.chunk_file)
        for chunk, stored in zip(chunks, tokens):
            text = embed_header(chunk.title, chunk.heading_path) + "\n" + chunk.text
            assert list(stored) == bm25_tokens(verb_index.analyzer, text)
    # A two-character piece of a word MeCab keeps whole (十キロ -> キロ) is found.
    hits = search(verb_index, "キロ", k=1, retriever="bm25")
    assert hits and Path(hits[0].chunk.path).name == "marathon.md"


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
        assert hits or retriever == "bm25", retriever  # dense always ranks the notes left
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


def test_anchored_fusion_leans_to_the_retriever_with_a_clear_answer():
    # BM25's top chunk holds 90% of what the query could score; dense is flat.
    sparse = [("lexical", 9.0), ("x", 1.0), ("y", 0.9)]
    dense = [("semantic", 0.801), ("lexical", 0.800), ("x", 0.799), ("y", 0.798)]
    assert fuse("anchored", sparse, dense, sparse_ceiling=10.0, depth=50)[0][0] == "lexical"
    # Now BM25 only scratches the query (10% of its ceiling) and dense has a clear winner.
    sparse = [("lexical", 1.0), ("x", 0.9)]
    dense = [("semantic", 0.95), ("lexical", 0.80), ("x", 0.79), ("y", 0.78)]
    assert fuse("anchored", sparse, dense, sparse_ceiling=10.0, depth=50)[0][0] == "semantic"


def test_anchored_fusion_scores_a_chunk_missing_from_a_short_bm25_list_as_zero():
    # Two chunks tie on dense; only one matches the query's words at all.
    sparse = [("match", 2.0)]
    dense = [("other", 0.9), ("match", 0.9), ("z", 0.7)]
    fused = fuse("anchored", sparse, dense, sparse_ceiling=4.0, depth=50)
    assert fused[0][0] == "match"


# ----------------------------------------------------------------- the llama-index retriever


class ReverseReranker:
    """A fake reranker: reverses what it is given (makes its effect visible)."""

    def __init__(self, settings=None):
        self.calls = []

    def rerank(self, query, chunks):
        self.calls.append((query, len(chunks)))
        return [ScoredChunk(c.chunk, float(i)) for i, c in enumerate(reversed(list(chunks)))]


def make_reverse_reranker(settings):
    return ReverseReranker(settings)


@pytest.fixture
def notes_index(fresh_index, notes):
    ingest(fresh_index, notes)
    return open_index(fresh_index)


def test_hybrid_retriever_returns_llama_index_nodes_with_locations(notes_index):
    from llama_index.core.schema import NodeWithScore

    from pipeline.index.retriever import HybridRetriever

    retriever = HybridRetriever(notes_index, top_k=2)
    nodes = retriever.retrieve("Ollamaの既定のポートは？")
    assert 1 <= len(nodes) <= 2
    assert all(isinstance(n, NodeWithScore) for n in nodes)
    top = nodes[0].node
    assert top.metadata["path"].endswith("ollama.md")
    assert "11434" in top.get_content()
    assert top.node_id == search(notes_index, "Ollamaの既定のポートは？", k=1)[0].chunk.id


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_retriever_modes_match_search(notes_index, mode):
    from pipeline.index.retriever import HybridRetriever

    got = HybridRetriever(notes_index, top_k=3, mode=mode).retrieve_chunks("量子化 メモリ")
    want = search(notes_index, "量子化 メモリ", k=3, retriever=mode)
    assert [c.chunk.id for c in got] == [c.chunk.id for c in want]


def test_reranker_reorders_the_fused_candidates(notes_index):
    from pipeline.index.retriever import HybridRetriever

    reranker = ReverseReranker()
    retriever = HybridRetriever(notes_index, top_k=2, reranker=reranker, rerank_candidates=3)
    pool = search(notes_index, "RAG 検索", k=3)
    got = retriever.retrieve_chunks("RAG 検索")
    assert reranker.calls == [("RAG 検索", len(pool))]
    assert [c.chunk.id for c in got] == [c.chunk.id for c in reversed(pool)][:2]


def test_reranker_is_loaded_from_the_setting(fresh_index):
    from pipeline.index.retriever import load_reranker

    assert load_reranker(fresh_index.model_copy(update={"reranker": None})) is None  # unset: no reranker

    class WithReranker:
        reranker = "tests.test_retrieval:make_reverse_reranker"

    assert type(load_reranker(WithReranker())).__name__ == "ReverseReranker"

    class Broken:
        reranker = "no_such_package.module:factory"

    with pytest.raises(ConfigError, match="reranker"):
        load_reranker(Broken())


# ----------------------------------------------------------------- the eval runner

TOY_CORPUS = [
    {"doc_id": "toy:ollama", "title": "Ollama", "text": "Ollamaの既定のポートは11434です。モデルは ollama pull で取得する。"},
    {"doc_id": "toy:rag", "title": "RAGメモ", "text": "RAGは検索した文書を根拠にして回答する手法です。"},
    {"doc_id": "toy:quant", "title": "量子化", "text": "7Bモデルは4bit量子化で約4GBのメモリで動く。"},
    {"doc_id": "toy/odd id:日本語", "title": "梅雨", "text": "梅雨は5月から7月にかけて雨の多い期間のこと。"},
]
TOY_QUERIES = [
    {"qid": "q1", "question": "Ollamaのポート番号は？", "answers": ["11434"], "gold_doc_ids": ["toy:ollama"]},
    {"qid": "q2", "question": "梅雨は何月から何月まで？", "answers": ["5月から7月"], "gold_doc_ids": ["toy/odd id:日本語"]},
    {"qid": "q3", "question": "4bit量子化した7Bモデルのメモリは？", "answers": ["約4GB"],
     "gold_doc_ids": ["toy:quant", "toy:rag"]},
]


@pytest.fixture
def toy_data(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in TOY_CORPUS), "utf-8")
    (d / "queries.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in TOY_QUERIES), "utf-8")
    return d


def test_eval_document_files_read_back_as_title_and_text(tmp_path):
    from pipeline.ingest.readers import read_document

    for rec in TOY_CORPUS:
        doc = CorpusDoc(rec["doc_id"], rec["title"], rec["text"])
        name = doc_filename(doc.doc_id)
        assert "/" not in name and not name.startswith(".")
        path = tmp_path / name
        path.write_text(render_document(doc), "utf-8")
        read = read_document(path)
        assert read.title == doc.title
        assert read.text[read.body_start :] == doc.text


def test_eval_retrieval_reports_every_metric_and_reuses_its_index(toy_data, tmp_path):
    settings = hash_settings(tmp_path / "user-index", cache_dir=tmp_path / "cache")
    first = evaluate_retrieval(toy_data, settings).to_dict()
    assert (first["n_docs"], first["n_queries"]) == (4, 3)
    assert list(first)[:3] == ["n_docs", "n_queries", "retrievers"]
    assert set(first["retrievers"]) == {"bm25", "dense", "hybrid"}
    for metrics in first["retrievers"].values():
        assert set(metrics) == {
            "recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "latency_ms_p50", "latency_ms_p95",
        }
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"))
    # Every document is found within the top 10 of 4 documents.
    assert first["retrievers"]["bm25"]["recall@10"] == 1.0
    assert first["index_cached"] is False
    # The user's index is never touched; the second run reuses the cached one.
    assert not (tmp_path / "user-index").exists()
    second = evaluate_retrieval(toy_data, settings, retrievers=("bm25",)).to_dict()
    assert second["index_cached"] is True
    assert second["retrievers"]["bm25"]["ndcg@10"] == first["retrievers"]["bm25"]["ndcg@10"]


def test_eval_retrieval_cli_prints_one_json_object(toy_data, tmp_path):
    import subprocess
    import sys

    env = {**__import__("os").environ, "RAG_EMBED_MODEL": "hash:256", "RAG_CHUNK_TOKENS": "120",
           "RAG_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "eval", "retrieval", str(toy_data), "--retriever", "bm25",
         "--limit", "2", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["n_queries"] == 2 and list(data["retrievers"]) == ["bm25"]


def test_eval_retrieval_rejects_an_unknown_retriever(toy_data, tmp_path):
    settings = hash_settings(tmp_path / "i", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="bm25, dense, hybrid"):
        evaluate_retrieval(toy_data, settings, retrievers=("splade",))


# ----------------------------------------------------------------- real embedder (slow)


@pytest.mark.slow
def test_real_embedder_hybrid_is_at_least_as_good_as_either_part_on_a_jsquad_slice(tmp_path):
    """30 JSQuAD paragraphs and their questions, multilingual-e5-small (CC BY-SA 4.0 data)."""
    from pipeline.settings import Settings

    src = EVALDATA / "jsquad_v1.3_valid"
    if not src.exists():
        pytest.skip("../shared/evaldata is not here")
    corpus = [json.loads(x) for x in (src / "corpus.jsonl").read_text("utf-8").splitlines()[:30]]
    ids = {d["doc_id"] for d in corpus}
    queries = [q for q in map(json.loads, (src / "queries.jsonl").read_text("utf-8").splitlines())
               if set(q["gold_doc_ids"]) <= ids]
    d = tmp_path / "slice"
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus), "utf-8")
    (d / "queries.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in queries), "utf-8")
    settings = Settings(index_dir=str(tmp_path / "unused"), cache_dir=tmp_path / "cache")
    report = evaluate_retrieval(d, settings, limit=60).to_dict()
    r = report["retrievers"]
    assert report["n_docs"] == 30
    assert r["dense"]["ndcg@10"] > 0.6 and r["bm25"]["ndcg@10"] > 0.6
    assert r["hybrid"]["ndcg@10"] >= max(r["bm25"]["ndcg@10"], r["dense"]["ndcg@10"]) - 0.02


# ----------------------------------------------------------------- second hop by title

HOP_NOTES = {
    "kawashima.md": "# 川島明\n\n川島明はお笑い芸人。所属する事務所は吉本興業である。\n",
    "yoshimoto.md": "# 吉本興業\n\n本店は大阪府大阪市中央区にある。創業は1912年。\n",
    "osaka.md": "# 大阪城\n\n大阪城は大阪府にある城で、豊臣秀吉が築いた。\n",
    "tokyo.md": "# 東京タワー\n\n東京都港区にある電波塔。芸人のロケにもよく使われる。\n",
    "agencies.md": "# 芸能事務所\n\nタレントが所属する会社。\n",
}
HOP_QUESTION = "川島明が所属する事務所の本店がある都道府県は？"


@pytest.fixture
def hop_index(tmp_path):
    return index_of_notes(tmp_path, HOP_NOTES)


def test_hybrid_follows_the_top_hit_to_the_document_it_names(hop_index):
    hits = search(hop_index, HOP_QUESTION, k=3, retriever="hybrid")
    names = [Path(h.chunk.path).name for h in hits]
    # The question never says 吉本興業; the top hit does, and 本店 is left to match there.
    assert names[:2] == ["kawashima.md", "yoshimoto.md"]
    assert hits[1].linked_from == hits[0].chunk.id and hits[0].linked_from is None


def test_no_second_hop_when_switched_off_or_nothing_is_left_to_find(hop_index):
    plain = hop_index.settings.model_copy(update={"follow_links": False})
    hop_index.settings = plain
    hits = search(hop_index, HOP_QUESTION, k=4, retriever="hybrid")
    assert hits and all(h.linked_from is None for h in hits)
    hop_index.settings = plain.model_copy(update={"follow_links": True})
    # Single-hop: the top hit holds every word of the question, so the note it names stays put.
    hits = search(hop_index, "川島明はどこに所属している？", k=4, retriever="hybrid")
    assert Path(hits[0].chunk.path).name == "kawashima.md"
    assert all(h.linked_from is None for h in hits)


def test_title_index_keeps_titles_one_document_holds():
    from pipeline.index.links import TitleIndex

    titles = TitleIndex.build({"a.md": "ＧＰＵ", "b.md": "概要", "c.md": "概要", "d.md": "x", "e.md": "吉本興業"})
    assert titles.named_in("吉本興業のgpu資料と概要") == ["e.md", "a.md"]  # NFKC, order of mention
