"""Evidence selection: how often the gold answer survives, and how many tokens the model reads.

    .venv/bin/python benchmarks/evidence.py [--data ../shared/evaldata/jsquad_v1.3_valid_articles] [--limit 200]

No LLM runs. For each question the retrieved chunks (the `top_k` hits, what retrieve mode
sent the model before) are compared with `select_evidence`'s excerpts at several budgets:
the share of questions whose gold answer appears in what the model reads (NFKC, spaces
and punctuation dropped, as `rag eval answers` does), and the mean prompt tokens of the
rendered sources with the embedded model's tokenizer.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared/evaldata/jsquad_v1.3_valid_articles"))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--budgets", default="300,450,600,800")
    parser.add_argument("--seeds", default="2,3,4,6")
    args = parser.parse_args()

    from pipeline.answer.backends.llama_cpp import load_tokenizer
    from pipeline.answer.evidence import select_evidence
    from pipeline.answer.packing import in_document_order, number_sources, render_sources
    from pipeline.evaluation.answers import normalize_answer
    from pipeline.evaluation.datasets import load_retrieval_dataset
    from pipeline.evaluation.retrieval import eval_index
    from pipeline.index.search import retrieve
    from pipeline.japanese import default_analyzer
    from pipeline.models.gguf import prepare_gguf
    from pipeline.settings import load_settings

    settings = load_settings()
    data = load_retrieval_dataset(Path(args.data), limit=args.limit)
    snapshot, _ = eval_index(settings, data)
    tok = load_tokenizer(prepare_gguf(Path(settings.cache_dir)))

    def count(text: str) -> int:
        return len(tok.tokenize(text.encode(), add_bos=False, special=False))

    analyzer = default_analyzer()
    rows: dict[str, list[tuple[bool, int]]] = {}
    for q in data.queries:
        r = retrieve(snapshot, q.question, k=settings.top_k, retriever=settings.retriever)
        golds = [normalize_answer(a) for a in q.answers if normalize_answer(a)]

        def record(name: str, sources) -> None:
            text = render_sources(sources)
            hit = any(g in normalize_answer("".join(s.chunk.text for s in sources)) for g in golds)
            rows.setdefault(name, []).append((hit, count(text)))

        record("retrieved chunks", number_sources(in_document_order([h.chunk for h in r.hits])))
        ranked = [h.chunk for h in r.hits]
        for b in (int(x) for x in args.budgets.split(",")):
            for s in (int(x) for x in args.seeds.split(",")):
                record(f"evidence budget {b} seeds {s}",
                       select_evidence(q.question, ranked, analyzer, count, budget_tokens=b, seeds=s))

    print(f"{data.name}: {len(data.queries)} questions, top_k {settings.top_k}")
    print("| what the model reads | gold answer kept | tokens (mean) | tokens (max) |")
    print("|---|---:|---:|---:|")
    for name, xs in rows.items():
        kept = statistics.fmean(float(h) for h, _ in xs)
        print(f"| {name} | {kept:.3f} | {statistics.fmean(n for _, n in xs):.0f} | {max(n for _, n in xs)} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print(f"command: .venv/bin/python benchmarks/evidence.py --data {os.path.relpath(args.data, REPO)} --limit {args.limit}")


if __name__ == "__main__":
    main()
