"""llama-index used the way its users use it: our pieces inside its real classes.

- `JapaneseChunker` inside an `IngestionPipeline` (no model: MeCab sentences, hashing embedder);
- `VectorStoreIndex.from_vector_store(ChromaVectorStore(...))` over the collection `rag ingest`
  wrote, `HybridRetriever` inside a `RetrieverQueryEngine`, and `api.as_query_engine`, all over
  one index of corpora/demo built with the embedded e5 model (slow).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline import api
from tests.conftest import DEMO

QUESTION = "Ollamaの既定のポートは？"
PORT = "11434"
OLLAMA_NOTE = "ollama-setup.org"

# A diary that repeats a line: the base NodeParser's str.find would put later chunks
# on an earlier copy of their text.
DIARY = "# 作業日誌\n" + "今日も同じ手順でモデルを量子化した。\n" * 8 + "明日は評価を回す。\n"


# --------------------------------------------------------------------------
# 1. The chunker in an IngestionPipeline (fast: no model)
# --------------------------------------------------------------------------


def llama_documents():
    from llama_index.core import Document as LlamaDocument

    note = (DEMO / OLLAMA_NOTE).read_text("utf-8")
    return [
        LlamaDocument(
            text=note,
            metadata={"file_path": str(DEMO / OLLAMA_NOTE), "author": "山田"},
            excluded_embed_metadata_keys=["file_path"],
            excluded_llm_metadata_keys=["file_path"],
        ),
        LlamaDocument(text=DIARY, metadata={"file_path": "/notes/diary.md"}),
    ]


def run_ingestion_pipeline(chunker, embedder):
    """A fresh pipeline over freshly made Documents (new random doc IDs each time)."""
    from llama_index.core.ingestion import IngestionPipeline

    from pipeline.index.embedder import as_llama_index_embedding

    docs = llama_documents()
    pipeline = IngestionPipeline(transformations=[chunker, as_llama_index_embedding(embedder)])
    return docs, pipeline.run(documents=docs)


@pytest.fixture(scope="module")
def hash_chunker():
    from pipeline.index.embedder import HashEmbedder
    from pipeline.ingest.chunker import JapaneseChunker

    embedder = HashEmbedder(64)
    return JapaneseChunker(chunk_tokens=60, overlap_sentences=1, token_counter=embedder.count_tokens), embedder


def test_ingestion_pipeline_chunks_in_document_order_with_verbatim_offsets(hash_chunker):
    chunker, embedder = hash_chunker
    docs, nodes = run_ingestion_pipeline(chunker, embedder)
    by_doc = {d.doc_id: i for i, d in enumerate(docs)}
    order = [(by_doc[n.ref_doc_id], n.start_char_idx) for n in nodes]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert {i for i, _ in order} == {0, 1}
    for n in nodes:
        text = docs[by_doc[n.ref_doc_id]].text
        assert (n.start_char_idx, n.end_char_idx) == (n.metadata["start"], n.metadata["end"])
        assert text[n.start_char_idx : n.end_char_idx] == n.get_content()
    # The repeated diary line: each chunk sits where it was cut, not on the first copy.
    diary = [n for n in nodes if n.ref_doc_id == docs[1].doc_id]
    assert len(diary) >= 3
    assert DIARY.count(diary[1].get_content()) > 1
    assert diary[1].start_char_idx > DIARY.find(diary[1].get_content(), diary[0].start_char_idx + 1)


def test_ingestion_pipeline_ids_are_the_ids_rag_ingest_gives(hash_chunker):
    from pipeline.documents import Document

    chunker, embedder = hash_chunker
    docs, first = run_ingestion_pipeline(chunker, embedder)
    _, second = run_ingestion_pipeline(chunker, embedder)
    assert [n.node_id for n in first] == [n.node_id for n in second]
    assert len({n.node_id for n in first}) == len(first)
    # The same IDs our own Document path gives for that text at that path.
    note = docs[0]
    ours = chunker.chunk_document(
        Document(
            path=note.metadata["file_path"], text=note.text, title=Path(OLLAMA_NOTE).stem,
            format="text", encoding="utf-8", mtime=0.0,
            content_hash=hashlib.sha256(note.text.encode()).hexdigest(),
        )
    )
    assert [n.node_id for n in first if n.ref_doc_id == note.doc_id] == [c.id for c in ours]


def test_ingestion_pipeline_keeps_the_documents_metadata_links_and_embeds(hash_chunker):
    from llama_index.core.schema import MetadataMode

    chunker, embedder = hash_chunker
    docs, nodes = run_ingestion_pipeline(chunker, embedder)
    note = [n for n in nodes if n.ref_doc_id == docs[0].doc_id]
    assert len(note) >= 2
    for n in note:
        assert n.metadata["author"] == "山田"  # the Document's own metadata is kept
        assert n.metadata["path"] == n.metadata["file_path"] == str(DEMO / OLLAMA_NOTE)
        assert n.metadata["line_start"] <= n.metadata["line_end"]
        embed_text = n.get_content(metadata_mode=MetadataMode.EMBED)
        # Excluded by the Document (file_path) and by us (offsets) alike.
        assert "file_path" not in embed_text and "line_start" not in embed_text
        assert n.embedding == pytest.approx(embedder.embed_passages([embed_text])[0].tolist())
    assert [n.next_node.node_id for n in note[:-1]] == [n.node_id for n in note[1:]]
    assert [n.prev_node.node_id for n in note[1:]] == [n.node_id for n in note[:-1]]


# --------------------------------------------------------------------------
# 2-4. Over an index of corpora/demo built by `rag ingest` with the e5 model (slow)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(settings, snapshot) of corpora/demo ingested with the embedded e5 model."""
    from pipeline.settings import Settings

    index_dir = tmp_path_factory.mktemp("demo-e5")
    settings = Settings(index_dir=str(index_dir))
    api.ingest([DEMO], settings=settings)
    return settings, api.open_index(settings=settings)


@pytest.mark.slow
def test_vector_store_index_opens_the_collection_rag_ingest_wrote(demo):
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from pipeline.index.embedder import as_llama_index_embedding
    from pipeline.index.search import search

    settings, snapshot = demo
    client = chromadb.PersistentClient(
        path=str(Path(settings.index_dir) / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    store = ChromaVectorStore(chroma_collection=client.get_collection(settings.chroma_collection))
    index = VectorStoreIndex.from_vector_store(store, embed_model=as_llama_index_embedding(snapshot.embedder))
    hits = index.as_retriever(similarity_top_k=3).retrieve(QUESTION)

    assert len(hits) == 3
    top = hits[0].node
    assert Path(top.metadata["path"]).name == OLLAMA_NOTE
    assert any(PORT in h.node.get_content() for h in hits)
    # The metadata locates the chunk in the file itself.
    source = Path(top.metadata["path"]).read_text("utf-8")
    start, end = top.metadata["start"], top.metadata["end"]
    assert source[start:end] == top.get_content()
    assert top.metadata["line_start"] == source.count("\n", 0, start) + 1
    assert top.metadata["line_end"] == source.count("\n", 0, end - 1) + 1
    # The same vectors our own dense search reads.
    ours = search(snapshot, QUESTION, k=3, retriever="dense")
    assert [h.node.node_id for h in hits] == [sc.chunk.id for sc in ours]


@pytest.mark.slow
def test_hybrid_retriever_answers_inside_a_retriever_query_engine(demo):
    from llama_index.core.query_engine import RetrieverQueryEngine

    from pipeline.answer.backends.base import FakeBackend, as_llama_index_llm
    from pipeline.answer.engine import Answerer
    from pipeline.index.retriever import HybridRetriever

    settings, snapshot = demo
    fake = FakeBackend(lambda prompt: f"Ollamaの既定のポートは{PORT}です。" if PORT in prompt else "分かりません")
    retriever = HybridRetriever.from_settings(settings, index=snapshot)
    engine = RetrieverQueryEngine.from_args(retriever, llm=as_llama_index_llm(fake))
    response = engine.query(QUESTION)

    assert response.response == f"Ollamaの既定のポートは{PORT}です。"
    assert len(fake.prompts) == 1 and QUESTION in fake.prompts[0]
    got = [n.node.node_id for n in response.source_nodes]
    assert got == [sc.chunk.id for sc in retriever.retrieve_chunks(QUESTION)]
    assert all(n.node.node_id in snapshot.chunks for n in response.source_nodes)
    assert any(Path(n.node.metadata["path"]).name == OLLAMA_NOTE for n in response.source_nodes)
    # `rag ask` in retrieve mode gives its LLM the very same chunks: whole (quote style) or excerpts of them.
    quote = settings.model_copy(update={"answer_style": "quote"})
    answer = Answerer(quote, snapshot, FakeBackend(lambda prompt: "分かりません")).ask(QUESTION, mode="retrieve")
    assert sorted(s.chunk.id for s in answer.sources) == sorted(got)
    short = Answerer(settings, snapshot, FakeBackend(lambda prompt: "分かりません")).ask(QUESTION, mode="retrieve")
    assert short.sources and {s.chunk.id.split("#")[0] for s in short.sources} <= set(got)


@pytest.mark.slow
def test_as_query_engine_answers_with_the_checkers_verdicts(demo):
    from llama_index.core.base.base_query_engine import BaseQueryEngine
    from llama_index.core.base.response.schema import Response
    from llama_index.core.schema import NodeWithScore

    settings, _ = demo
    engine = api.as_query_engine(index=settings.index_dir, backend="extractive")
    assert isinstance(engine, BaseQueryEngine)
    response = engine.query(QUESTION)

    assert isinstance(response, Response)
    assert PORT in response.response
    cited = response.source_nodes
    assert cited and all(isinstance(n, NodeWithScore) for n in cited)
    assert any(Path(n.node.metadata["path"]).name == OLLAMA_NOTE and PORT in n.node.get_content() for n in cited)
    meta = response.metadata
    assert meta["route"]["mode"] == meta["mode"] and meta["route"]["reasons"]
    verdicts = meta["verdicts"]
    assert verdicts and all(v["verdict"] in ("supported", "unsupported", "uncited", "supported_by_other")
                            for v in verdicts)
    port_sentence = next(v for v in verdicts if PORT in v["text"])
    assert port_sentence["verdict"] == "supported"
    # Each cited node is a source the answer's sentences cite, under the same [n].
    numbers = {n for v in verdicts for n in [*v["citations"], *v["fixed_citations"]]}
    assert {n.node.metadata["citation"] for n in cited} <= numbers
