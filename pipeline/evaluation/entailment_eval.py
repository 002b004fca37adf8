"""How well the entailment model separates supported claims from unsupported ones.

`evaluate_pairs(model, examples)` scores (premise, hypothesis) pairs with an
`EntailmentModel` and reports AUROC (entailed vs not), the share of *correct* claims
(label entailed) flagged at the shipped threshold, the share of wrong ones caught, and the
seconds per pair (batched, as the checker scores an answer's sentences).

    python -m pipeline.evaluation.entailment_eval ../shared/evaldata/jnli_v1.3_valid
    python -m pipeline.evaluation.entailment_eval --heldout            # claims of held-out articles
    python -m pipeline.evaluation.entailment_eval --claims benchmarks/data/claims_jsquad --json

A pairs file is `pairs.jsonl` (premise, hypothesis, label, pair_id, meta) as in
`shared/evaldata/jnli_v1.3_valid`. A set given with ``--claims`` (built from the QA dev sets,
like `benchmarks/data/claims_jsquad`) keeps only the pairs whose ``meta.group`` (article) the
training never saw (`entailment_data.split_of` with the artifact's seed).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from pipeline.evaluation.entailment_data import LABELS, DataConfig, Example, build_splits, split_of

__all__ = ["EntailmentEval", "auroc", "evaluate_pairs", "heldout_only", "load_examples", "metrics", "threshold_for"]


@dataclass(frozen=True)
class EntailmentEval:
    pairs: int
    entailed: int
    auroc: float
    threshold: float
    correct_flagged: float  # share of entailed pairs scored below the threshold
    wrong_caught: float  # share of not-entailed pairs scored below the threshold
    accuracy: float
    seconds_per_pair: float | None = None

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    if len(set(labels)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def metrics(labels: Sequence[int], scores: Sequence[float], threshold: float,
            seconds_per_pair: float | None = None) -> EntailmentEval:
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    flagged = sum(s < threshold for s in pos)
    caught = sum(s < threshold for s in neg)
    return EntailmentEval(
        pairs=len(labels), entailed=len(pos), auroc=auroc(labels, scores), threshold=threshold,
        correct_flagged=flagged / len(pos) if pos else float("nan"),
        wrong_caught=caught / len(neg) if neg else float("nan"),
        accuracy=(len(pos) - flagged + caught) / max(1, len(labels)),
        seconds_per_pair=seconds_per_pair,
    )


def threshold_for(correct_scores: Sequence[float], flag_share: float) -> float:
    """The highest threshold that flags at most `flag_share` of these correct claims (flag = P < t)."""
    s = sorted(correct_scores)
    if not s:
        return 0.5
    k = int(flag_share * len(s))  # at most k scores lie strictly below s[k]
    return float(s[min(k, len(s) - 1)])


def load_examples(path: str | Path) -> list[Example]:
    """A pairs folder or file as `Example`s (label entailment → 1; others → 0)."""
    p = Path(path)
    if p.is_dir():
        p = p / "pairs.jsonl"
    out = []
    with p.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            meta = d.get("meta") or {}
            out.append(Example(d["premise"], d["hypothesis"], LABELS[str(d["label"]).strip().lower()],
                               str(meta.get("source", p.parent.name)), str(meta.get("kind", d["label"])),
                               str(meta.get("group") or d.get("pair_id")), str(d.get("pair_id"))))
    return out


def evaluate_pairs(model, examples: Sequence[Example], threshold: float | None = None) -> EntailmentEval:
    """Score `examples` with an `EntailmentModel`; cost measured over the whole batch."""
    t0 = time.perf_counter()
    scores = model.score([(e.premise, e.hypothesis) for e in examples])
    cost = (time.perf_counter() - t0) / max(1, len(examples))
    return metrics([e.label for e in examples], scores, model.threshold if threshold is None else threshold, cost)


def heldout_only(examples: Sequence[Example], seed: int, cfg: DataConfig = DataConfig()) -> list[Example]:
    return [e for e in examples if split_of(e.group, seed, cfg.heldout, cfg.val) == "heldout"]


def _main(argv: list[str]) -> int:  # pragma: no cover - a measurement command
    import argparse

    from pipeline.check.entailment import ARTIFACT_DIR, EntailmentModel
    from pipeline.settings import load_settings

    ap = argparse.ArgumentParser(prog="python -m pipeline.evaluation.entailment_eval")
    ap.add_argument("paths", nargs="*", help="pairs folders or files, scored whole")
    ap.add_argument("--claims", action="append", default=[], help="a claim set: only its held-out articles")
    ap.add_argument("--heldout", action="store_true", help="the claims of held-out articles (rebuilt)")
    ap.add_argument("--artifact", type=Path, default=ARTIFACT_DIR)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    model = EntailmentModel.load(load_settings(), args.artifact)
    sets: dict[str, list[Example]] = {}
    for p in args.paths:
        sets[str(p)] = load_examples(p)
    for p in args.claims:
        sets[f"{p} (held-out articles)"] = heldout_only(load_examples(p), model.config.seed)
    if args.heldout:
        cfg = DataConfig(seed=model.config.seed, premise_chars=model.config.premise_chars)
        sets["heldout_claims"] = build_splits(cfg).heldout
    report = {}
    for name, ex in sets.items():
        ex = ex[: args.limit] if args.limit else ex
        report[name] = evaluate_pairs(model, ex).to_dict()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        for name, r in report.items():
            print(f"{name}: AUROC {r['auroc']:.3f}, correct flagged {r['correct_flagged']:.1%}, "
                  f"wrong caught {r['wrong_caught']:.1%}, {r['seconds_per_pair']:.4f} s/pair ({r['pairs']} pairs)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
