"""Choose the reranker's rank prior (`pipeline.answer.rerank.RANK_WEIGHT`) on the validation articles.

    python benchmarks/rerank_weight.py --split val --limit 150 --cache /tmp/rerank-probs
    python benchmarks/rerank_weight.py --split heldout --limit 200 --weights 3.0   # report only

For each set's questions of one split (`relevance_data.split_qids`), the hybrid list is
computed once and the reranker scores its first `reranker_candidates` chunks once; then
each weight w orders them by logit(P) − w·log(1 + rank) and the documents are scored
(nDCG@10, the `rag eval retrieval` metric). w = 0 is the model alone; a large w is the
hybrid order; each weight also without keeping second-hop chunks after the hit that names
them. Prints one row per set and weight, the reranker's seconds per question, and the load
average.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETS = ("jsquad_v1.3_valid", "jaquad_dev", "jemhopqa_v1.2", "jsquad_v1.3_valid_articles", "jaquad_dev_articles")


def main(argv: list[str] | None = None) -> int:
    from pipeline.answer.rerank import cross_encoder
    from pipeline.evaluation.datasets import load_retrieval_dataset, spread
    from pipeline.evaluation.metrics import dedupe, mean_scores, score_query
    from pipeline.evaluation.relevance_data import split_qids
    from pipeline.evaluation.retrieval import CHUNK_DEPTH, eval_index
    from pipeline.index.search import search
    from pipeline.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evaldata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "evaldata")
    ap.add_argument("--sets", nargs="*", default=list(SETS))
    ap.add_argument("--split", default="val", choices=("val", "heldout", "train"))
    ap.add_argument("--limit", type=int, default=200, help="questions per set (evenly spaced)")
    ap.add_argument("--weights", type=float, nargs="*", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    ap.add_argument("--cache", type=Path, default=None, help="keep the model's probabilities here (pickle) "
                    "and reuse them: a second run with other weights scores nothing")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    settings = load_settings()
    reranker = cross_encoder(settings)
    n = settings.reranker_candidates
    rows, cost = [], []
    for name in a.sets:
        ds = load_retrieval_dataset(a.evaldata / name)
        keep = split_qids(ds.queries, a.split)
        queries = spread([q for q in ds.queries if q.qid in keep], a.limit)
        index, doc_id = eval_index(settings, ds)
        cache = a.cache / f"{name}-{a.split}-{len(queries)}-{n}.pkl" if a.cache else None
        if cache and cache.exists():  # the model's probabilities of an earlier run: orders only
            scored = pickle.loads(cache.read_bytes())
        else:
            scored = []  # per question: (gold, hits, probs)
            for q in queries:
                hits = search(index, q.question, k=CHUNK_DEPTH)
                t0 = time.perf_counter()
                probs = reranker.scores(q.question, hits[:n])
                cost.append(time.perf_counter() - t0)
                scored.append((q.gold_doc_ids, hits, probs))
            if cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(pickle.dumps(scored))
        base = mean_scores([score_query([doc_id(h.chunk.path) for h in hits], gold) for gold, hits, _ in scored])
        rows.append({"set": name, "weight": "hybrid", "questions": len(queries), "ndcg@10": round(base["ndcg@10"], 4)})
        for follow in (True, False):
            for w in a.weights:
                reranker.rank_weight, reranker.follow_links = w, follow
                per_q = []
                for gold, hits, probs in scored:
                    head = reranker.order(hits[:n], probs)
                    per_q.append(score_query(dedupe(doc_id(h.chunk.path) for h in head + hits[n:]), gold))
                m = mean_scores(per_q)
                label = f"{w}" if follow else f"{w}, links not kept"
                rows.append({"set": name, "weight": label, "questions": len(queries),
                             "ndcg@10": round(m["ndcg@10"], 4)})
        print(f"# {name}: done ({len(queries)} questions)", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    cost.sort()
    summary = {"split": a.split, "candidates": n, "load_avg_1m": round(load, 2)}
    if cost:  # (none when every probability came from --cache)
        summary.update(rerank_s_p50=round(cost[len(cost) // 2], 3), rerank_s_p95=round(cost[int(len(cost) * 0.95)], 3))
    if a.json:
        print(json.dumps({"rows": rows, **summary}, ensure_ascii=False, indent=1))
        return 0
    print("| set | questions | order | nDCG@10 |\n|---|---:|---|---:|")
    for r in rows:
        print(f"| {r['set']} | {r['questions']} | {r['weight']} | {r['ndcg@10']:.4f} |")
    print(json.dumps(summary))
    print("command: python benchmarks/rerank_weight.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
