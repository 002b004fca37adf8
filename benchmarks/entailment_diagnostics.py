"""Where the entailment model's AUROC is lost: per data source and split, and per kind of wrong claim.

    python benchmarks/entailment_diagnostics.py                       # the shipped model
    python benchmarks/entailment_diagnostics.py --model /tmp/exp/d8   # a model written by train_checker --out

Scores, with `EntailmentModel.score` (the model alone, no checker rules):
* the NLI pairs of the training data's own splits (JNLI test, JSICK train: the part trained on
  and the part that chose the checkpoint) and JNLI valid: does the model fit JNLI at all?
* the held-out articles' claims, each kind of wrong claim against all correct ones, with the share
  the shipped threshold catches, and the whole set without its hardest kind.
Prints a table and the load average; about 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="an artifact folder (default: the shipped model)")
    args = ap.parse_args(argv)

    import torch

    from pipeline.check.entailment import ARTIFACT_DIR, EntailmentModel
    from pipeline.evaluation.entailment_data import DataConfig, build_splits, jnli_valid
    from pipeline.evaluation.entailment_eval import auroc, metrics
    from pipeline.settings import load_settings

    torch.set_num_threads(2)
    model = EntailmentModel.load(load_settings(), args.model or ARTIFACT_DIR)
    splits = build_splits(DataConfig())

    def scores(xs):
        return model.score([(e.premise, e.hypothesis) for e in xs])

    print(f"model: {args.model or ARTIFACT_DIR}, threshold {model.threshold:.4f}\n")
    print("| NLI pairs | pairs | AUROC |\n|---|---:|---:|")
    nli = [(f"{src} {part}", [e for e in getattr(splits, part) if e.source == src])
           for src in ("jnli", "jsick") for part in ("train", "val")]
    for name, xs in [*nli, ("jnli_valid", jnli_valid(DataConfig()))]:
        print(f"| {name} | {len(xs)} | {auroc([e.label for e in xs], scores(xs)):.4f} |", flush=True)

    held = splits.heldout
    p = scores(held)
    correct = [s for e, s in zip(held, p) if e.label]
    wrong: dict[str, list[float]] = defaultdict(list)
    for e, s in zip(held, p):
        if not e.label:
            wrong[e.kind].append(s)
    by_kind = {kind: metrics([1] * len(correct) + [0] * len(neg), correct + neg, model.threshold)
               for kind, neg in wrong.items()}
    print("\n| wrong claims (held out) | pairs | AUROC vs the correct claims | caught at the threshold |\n|---|---:|---:|---:|")
    for kind, r in sorted(by_kind.items(), key=lambda kv: -kv[1].auroc):
        print(f"| {kind} | {r.pairs - r.entailed} | {r.auroc:.4f} | {r.wrong_caught:.1%} |")
    print(f"| all | {len(held)} | {auroc([e.label for e in held], p):.4f} | |")
    hardest = min(by_kind, key=lambda k: by_kind[k].auroc)
    rest = [(e.label, s) for e, s in zip(held, p) if e.kind != hardest]
    print(f"\nwithout '{hardest}': AUROC {auroc([y for y, _ in rest], [s for _, s in rest]):.4f} ({len(rest)} pairs)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("command: python benchmarks/entailment_diagnostics.py" + (f" --model {args.model}" if args.model else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
