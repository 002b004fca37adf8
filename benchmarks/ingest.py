"""Ingest speed: our pipeline vs a stock llama-index pipeline, on the same articles, one run.

    .venv/bin/python benchmarks/ingest.py [--data ../shared/evaldata/jaquad_dev_articles] [--docs 12]
        [--precision fp32 --precision int8]

Ours: readers -> Japanese chunker -> e5 (passage: prefix) -> Chroma + BM25, through `Ingestor`,
once per `--precision` (the embedded e5's fp32 ONNX graph, and its int8 graph: `embed_precision`).
Stock: SentenceSplitter(chunk_size=300) -> HuggingFaceEmbedding(same e5 folder) ->
ChromaVectorStore via IngestionPipeline. Both embed with the same model on the same CPU,
so the ratio is what the Japanese-aware work (MeCab, BM25, manifest) costs or saves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


class TimedEmbedder:
    """Wraps an embedder and adds up the seconds spent embedding."""

    def __init__(self, inner):
        self.inner, self.seconds, self.passages, self.texts = inner, 0.0, 0, []
        self.name, self.dim = inner.name, inner.dim

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def embed_query(self, text):
        return self.inner.embed_query(text)

    def embed_passages(self, texts):
        t0 = time.perf_counter()
        out = self.inner.embed_passages(texts)
        self.seconds += time.perf_counter() - t0
        self.passages += len(texts)
        self.texts.extend(texts)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "evaldata" / "jaquad_dev_articles"))
    ap.add_argument("--docs", type=int, default=12, help="articles to ingest (the first N)")
    ap.add_argument("--precision", action="append", choices=["fp32", "int8"],
                    help="our embedder's weights (repeat to compare; default fp32 and int8)")
    args = ap.parse_args()
    precisions = args.precision or ["fp32", "int8"]

    from pipeline.index.embedder import load_embedder, resolve_model_path
    from pipeline.ingest.sync import Ingestor
    from pipeline.settings import Settings

    docs = [json.loads(l) for l in open(Path(args.data) / "corpus.jsonl", encoding="utf-8")][: args.docs]
    chars = sum(len(d["title"]) + 1 + len(d["text"]) for d in docs)
    work = Path(tempfile.mkdtemp(prefix="rag-bench-ingest-"))
    (work / "docs").mkdir()
    for i, d in enumerate(docs):
        (work / "docs" / f"{i:04d}.txt").write_text(d["title"] + "\n" + d["text"] + "\n", encoding="utf-8")

    ours, whole = {}, {}
    for precision in precisions:
        # `rag ingest` as a person or cron runs it: a new process, start-up and model load included.
        rag = Path(sys.executable).parent / "rag"
        env = {**os.environ, "RAG_EMBED_PRECISION": precision}
        t0 = time.perf_counter()
        subprocess.run([str(rag), "ingest", str(work / "docs"), "--index", str(work / f"cli-{precision}"), "--quiet",
                        "--no-prefix"], check=True, env=env, stdout=subprocess.DEVNULL, cwd=REPO)
        whole[precision] = time.perf_counter() - t0

        settings = Settings(index_dir=str(work / f"ours-{precision}"), embed_precision=precision)
        embedder = TimedEmbedder(load_embedder(settings))
        # Model loads and imports out of both timings (stock's happen before its clock starts too).
        # One tiny note first: the ingest's modules, MeCab and Chroma are loaded before the clock starts.
        (work / "warm").mkdir(exist_ok=True)
        (work / "warm" / "warm.txt").write_text("準備\n短いメモ。\n", encoding="utf-8")
        Ingestor(settings, work / f"warm-{precision}", embedder=embedder).run([work / "warm"])
        embedder.seconds, embedder.passages, embedder.texts = 0.0, 0, []
        t0 = time.perf_counter()
        summary = Ingestor(settings, work / f"ours-{precision}", embedder=embedder).run([work / "docs"])
        wall = time.perf_counter() - t0
        # The embedder alone on the very texts the ingest embedded, in one call: its limit.
        t0 = time.perf_counter()
        embedder.inner.embed_passages(embedder.texts)
        ours[precision] = (wall, embedder.seconds, summary.chunks, time.perf_counter() - t0)

    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore
    import chromadb

    hf = HuggingFaceEmbedding(model_name=resolve_model_path(settings), device="cpu")
    hf.get_text_embedding("warm-up")
    client = chromadb.PersistentClient(path=str(work / "stock"))
    store = ChromaVectorStore(chroma_collection=client.get_or_create_collection("stock", embedding_function=None))
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=300, chunk_overlap=30), hf], vector_store=store)
    documents = [Document(text=d["title"] + "\n" + d["text"]) for d in docs]
    t0 = time.perf_counter()
    nodes = pipeline.run(documents=documents)
    stock = time.perf_counter() - t0

    print(f"data: {os.path.relpath(args.data, REPO)} ({len(docs)} articles, {chars} characters)")
    for precision, (wall, embedding, chunks, alone) in ours.items():
        print(f"ours {precision}: {wall:7.1f} s  {chars / wall:8.0f} chars/s  {chunks / wall:6.2f} chunks/s  "
              f"{chunks} chunks; embedding {embedding:.1f} s = {100 * embedding / wall:.0f}% of the time, "
              f"everything else {wall - embedding:.1f} s; the embedder alone on the same texts {alone:.1f} s: "
              f"ingest at {alone / wall:.2f} of its rate")
    for precision, wall in whole.items():
        alone = ours[precision][3]
        print(f"rag ingest {precision} (new process, start-up included): {wall:7.1f} s; the embedder alone "
              f"{alone:.1f} s: {alone / wall:.2f} of its rate")
    print(f"stock     : {stock:7.1f} s  {chars / stock:8.0f} chars/s  {len(nodes) / stock:6.2f} chunks/s  {len(nodes)} chunks")
    for precision, (wall, _, chunks, _) in ours.items():
        print(f"characters/s ours {precision} / stock: {stock / wall:.2f}x  (per chunk: {(stock / len(nodes)) / (wall / chunks):.2f}x)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    flags = "".join(f" --precision {p}" for p in precisions)
    print(f"command: .venv/bin/python benchmarks/ingest.py --data {os.path.relpath(args.data, REPO)} --docs {args.docs}{flags}")


if __name__ == "__main__":
    main()
