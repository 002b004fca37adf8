"""Can the evidence answer the question? Signals measured before any LLM runs.

    .venv/bin/python benchmarks/answerability.py --data ../shared/evaldata/jsquad_v1.3_valid_articles \
        --borrow ../shared/evaldata/jaquad_dev_articles [--limit 200]

Answerable questions are the set's own; unanswerable ones are borrowed from another set
(`load_unanswerable`: their gold answers are nowhere in this corpus). For each question the
retrieved chunks and `select_evidence`'s excerpts are read, and the signals of
`pipeline.answer.answerability` are printed with their AUROC (answerable vs borrowed) and,
for the shipped rule, the share of each side it lets through.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def auroc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared/evaldata/jsquad_v1.3_valid_articles"))
    parser.add_argument("--borrow", default=str(REPO.parent / "shared/evaldata/jaquad_dev_articles"))
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()

    from pipeline.answer.answerability import answerability
    from pipeline.answer.evidence import select_evidence
    from pipeline.evaluation.answers import load_unanswerable
    from pipeline.evaluation.datasets import load_retrieval_dataset
    from pipeline.evaluation.retrieval import eval_index
    from pipeline.index.search import retrieve
    from pipeline.japanese import default_analyzer
    from pipeline.settings import load_settings
    from pipeline.tokens import estimate_tokens

    settings = load_settings()
    data = load_retrieval_dataset(Path(args.data), limit=args.limit)
    borrowed = load_unanswerable(Path(args.borrow), data.corpus, args.limit)
    snapshot, _ = eval_index(settings, data)
    analyzer = default_analyzer()

    def signals(question: str):
        r = retrieve(snapshot, question, k=settings.top_k, retriever=settings.retriever)
        sources = select_evidence(question, [h.chunk for h in r.hits], analyzer, estimate_tokens,
                                  budget_tokens=settings.evidence_tokens)
        return answerability(question, [s.chunk.text for s in sources], analyzer)

    pos = [signals(q.question) for q in data.queries]
    neg = [signals(q.question) for q in borrowed.queries]
    print(f"{data.name}: {len(pos)} own questions, {len(neg)} borrowed from {Path(args.borrow).name}")
    print("| signal | AUROC | mean own | mean borrowed |")
    print("|---|---:|---:|---:|")
    for name in pos[0].features:
        a = [s.features[name] for s in pos]
        b = [s.features[name] for s in neg]
        print(f"| {name} | {auroc(a, b):.3f} | {statistics.fmean(a):.3f} | {statistics.fmean(b):.3f} |")
    print("\n| threshold | coverage: own kept / borrowed refused | best_sentence: own kept / borrowed refused |")
    print("|---:|---|---|")
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        cells = []
        for name in ("coverage", "best_sentence"):
            own = statistics.fmean(float(s.features[name] >= t) for s in pos)
            ref = statistics.fmean(float(s.features[name] < t) for s in neg)
            cells.append(f"{own:.3f} / {ref:.3f}")
        print(f"| {t} | {cells[0]} | {cells[1]} |")
    kept_own = statistics.fmean(float(s.answerable) for s in pos)
    kept_borrowed = statistics.fmean(float(s.answerable) for s in neg)
    print(f"\nrule: answerable when {pos[0].rule}")
    print(f"own questions let through {kept_own:.3f}; borrowed questions refused {1 - kept_borrowed:.3f}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print(f"command: .venv/bin/python benchmarks/answerability.py --data {os.path.relpath(args.data, REPO)} "
          f"--borrow {os.path.relpath(args.borrow, REPO)} --limit {args.limit}")


if __name__ == "__main__":
    main()
