"""`rag eval citations`: how well the citation checker separates supported from unsupported.

A data folder holds ``pairs.jsonl`` lines ``{"premise", "hypothesis", "label", "pair_id",
"meta"}`` (the JNLI layout of ``shared/evaldata/jnli_v1.3_valid``, and our claim sets); a
pair is *supported* when ``label == "entailment"``. `evaluate` scores every pair with
`CitationChecker.support_many` (the semantic stage batched, as when it checks an answer)
and reports AUROC (supported vs not), and at the checker's threshold the share of correct
claims flagged, the accuracy and the precision / recall of "unsupported", plus the seconds
per pair, for the mode in use (``settings.citation_model``; `run_eval`).

The entailment model (mode "entailment") trained on claims built from the QA dev sets'
articles and on the NLI training sets: `run_eval` reports it only on what it never saw
(`unseen_by_model`: the claims of its held-out articles, as
``python -m pipeline.evaluation.entailment_eval --claims`` does) and says how many pairs it
left out (``excluded_trained``).

The checker's fitted weights (``pipeline/check/fitted.json``) come from `refit`: features
on the *tune* half of each dataset (JNLI valid, claims_jsquad, claims_roles; halves by a
hash of the article or pair id, `split_of`), a class- and dataset-balanced logistic
regression (scikit-learn), reported on the *holdout* half::

    python -m pipeline.evaluation.citations refit --write      # rewrites pipeline/check/fitted.json

Embeddings computed for the fit are cached with the rest of evaluation's
(`pipeline.evaluation.embed_cache`); the feature table and the judge's answers under
``$RAG_CITATION_CACHE`` (default ``/tmp/rag-citation-cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from pipeline.check.model import JudgeModel, LinearModel
    from pipeline.index.embedder import Embedder
    from pipeline.settings import Settings

__all__ = [
    "CitationEval",
    "auroc",
    "best_threshold",
    "classification",
    "evaluate",
    "feature_table",
    "fit_logistic",
    "fit_quadratic",
    "load_pairs",
    "refit",
    "run_eval",
    "split_of",
    "unseen_by_model",
]


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        from pipeline.errors import InvalidInput

        raise InvalidInput(f"--limit は 0 以上にしてください: {limit}")


def load_pairs(data_dir: str | Path, limit: int | None = None, split: str = "all") -> list[dict]:
    """Pairs from ``DATA_DIR/pairs.jsonl`` (or a .jsonl file), optionally one half, first `limit`."""
    _check_limit(limit)
    path = Path(data_dir)
    if path.is_dir():
        path = path / "pairs.jsonl"
    if not path.exists():
        from pipeline.errors import ConfigError

        raise ConfigError(f"pairs.jsonl がありません: {path}\n(premise, hypothesis, label) の JSON Lines を置いてください。")
    pairs = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                pairs.append(json.loads(line))
    if split != "all":
        pairs = [p for p in pairs if split_of(p) == split]
    return pairs[:limit] if limit else pairs


def split_of(pair: dict) -> str:
    """'tune' or 'holdout': a stable hash of the pair's group (article) or id."""
    key = (pair.get("meta") or {}).get("group") or pair.get("pair_id") or pair["premise"] + pair["hypothesis"]
    return "tune" if hashlib.sha1(str(key).encode()).digest()[0] % 2 == 0 else "holdout"


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (ties count one half); labels 1 = positive; NaN with one class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=int)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=float)))


@dataclass(frozen=True)
class CitationEval:
    n: int
    auroc: float
    accuracy: float
    precision_unsupported: float
    recall_unsupported: float
    seconds_per_pair: float
    threshold: float
    supported: int
    judge_calls: int
    mode: str  # "cheap" | "embed" | "entailment" (+ "+judge")
    correct_flagged: float = float("nan")  # share of supported pairs scored under the threshold
    excluded_trained: int = 0  # pairs left out: the entailment model trained on them (`unseen_by_model`)

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def classification(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict:
    """Accuracy and precision/recall of the *unsupported* class at `threshold`."""
    y = np.asarray(labels, dtype=bool)
    pred_sup = np.asarray(scores) >= threshold
    tp_u = int(np.sum(~pred_sup & ~y))
    pu = int(np.sum(~pred_sup))
    au = int(np.sum(~y))
    return {
        "accuracy": float(np.mean(pred_sup == y)) if len(y) else float("nan"),
        "precision_unsupported": tp_u / pu if pu else 0.0,
        "recall_unsupported": tp_u / au if au else 0.0,
    }


def _correct_flagged(labels: Sequence[int], scores: Sequence[float], threshold: float) -> float:
    """Share of the supported pairs scored under `threshold` (flagged although correct)."""
    pos = [s for y, s in zip(labels, scores) if y]
    return sum(s < threshold for s in pos) / len(pos) if pos else float("nan")


# Pairs per progress report (and per `support_many` call).
PROGRESS_EVERY = 100


def evaluate(checker, pairs: Sequence[dict], progress: Callable[[int], None] | None = None) -> tuple[CitationEval, list[float]]:
    """Score every pair with `checker.support_many`; the summary and the scores."""
    labels = [int(p["label"] == "entailment") for p in pairs]
    scores: list[float] = []
    t0 = time.perf_counter()
    calls0 = checker.judge_calls
    for start in range(0, len(pairs), PROGRESS_EVERY):
        batch = pairs[start:start + PROGRESS_EVERY]
        scores += checker.support_many([(p["premise"], p["hypothesis"]) for p in batch])
        if progress and len(batch) == PROGRESS_EVERY:
            progress(len(scores))
    secs = time.perf_counter() - t0
    cls = classification(labels, scores, checker.threshold)
    mode = checker.mode + ("+judge" if checker.use_judge else "")
    ev = CitationEval(
        n=len(pairs),
        auroc=auroc(labels, scores),
        seconds_per_pair=secs / len(pairs) if pairs else 0.0,
        threshold=checker.threshold,
        supported=sum(labels),
        judge_calls=checker.judge_calls - calls0,
        mode=mode,
        correct_flagged=_correct_flagged(labels, scores, checker.threshold),
        **cls,
    )
    return ev, scores


# What the entailment model trained on (`pipeline.evaluation.entailment_data`): claims and role
# pairs whose meta.group is an article of these QA sets, and the NLI training sets, by pair id.
def _trained_claim_sources() -> tuple[str, ...]:
    from pipeline.evaluation.entailment_data import JEMHOP, QA_SETS

    return tuple(f"{name.split('_')[0]}:" for name in QA_SETS) + (f"{JEMHOP.split('_')[0]}:",)


TRAINED_NLI_IDS = ("jnli-test:", "jsick:")  # shared/traindata/jnli_v1.3_test, jsick_train


def unseen_by_model(pairs: Sequence[dict], seed: int) -> tuple[list[dict], int]:
    """The pairs the entailment model trained with `seed` never saw, and how many were left out.

    A claim or role pair from a QA set it trained on counts only when its article
    (``meta.group``) fell on the held-out side of its split (`entailment_data.split_of`,
    as `entailment_eval --claims`); pairs of its NLI training sets never count; any other
    pair (JNLI valid, other data) counts."""
    from pipeline.evaluation.entailment_data import DataConfig, split_of as article_split

    cfg = DataConfig()
    sources = _trained_claim_sources()
    kept = []
    for p in pairs:
        group = str((p.get("meta") or {}).get("group") or "")
        if str(p.get("pair_id") or "").startswith(TRAINED_NLI_IDS):
            continue
        if group.startswith(sources) and article_split(group, seed, cfg.heldout, cfg.val) != "heldout":
            continue
        kept.append(p)
    return kept, len(pairs) - len(kept)


def run_eval(settings, data_dir: str | Path, limit: int | None = None, split: str = "all",
             use_embedder: bool = True, judge=None, progress=None, model: str | None = None) -> CitationEval:
    """What `rag eval citations` runs: load the pairs, build the checker, evaluate.

    `model` ("auto" | "entailment" | "embedding" | "cheap") replaces ``settings.citation_model``;
    without `use_embedder`, "cheap". In mode "entailment" only the pairs the model never saw
    are scored (`unseen_by_model`); `limit` counts those.
    """
    from pipeline.check import CitationChecker

    _check_limit(limit)
    pairs = load_pairs(data_dir, split=split)
    choice = "cheap" if not use_embedder else (model or settings.citation_model)
    settings = settings.model_copy(update={"citation_model": choice})

    def embedder():
        from pipeline.index.embedder import load_embedder

        return load_embedder(settings)

    checker = CitationChecker.from_settings(settings, embedder=embedder, judge=judge)
    excluded = 0
    if checker.entails:
        pairs, excluded = unseen_by_model(pairs, checker.semantic.model.config.seed)
    pairs = pairs[:limit] if limit else pairs
    ev, _ = evaluate(checker, pairs, progress=progress)
    return replace(ev, excluded_trained=excluded)


# --------------------------------------------------------------------------
# Fitting the combination
# --------------------------------------------------------------------------


def fit_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1.0) -> dict:
    """Weighted, L2-regularized logistic regression on standardized X (intercept not penalized).

    Minimizes sum(w_i · loss_i) + l2/2 · |coef|² with `w` rescaled to sum to len(w);
    returns the standardization and the coefficients per standardized unit.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    w = w / w.sum() * len(w)
    # newton-cholesky: exact Newton steps, as the problem is small and smooth.
    lr = LogisticRegression(C=1.0 / l2, solver="newton-cholesky", tol=1e-10, max_iter=100)
    lr.fit(scaler.transform(X), y, sample_weight=w)
    return {
        "mean": [round(float(v), 6) for v in scaler.mean_],
        "scale": [round(float(v), 6) for v in scaler.scale_],
        "coef": [round(float(v), 6) for v in lr.coef_[0]],
        "intercept": round(float(lr.intercept_[0]), 6),
    }


def _balanced_weights(y: np.ndarray, ds: np.ndarray) -> np.ndarray:
    """Each dataset weighs the same; inside it, both classes weigh the same."""
    w = np.zeros(len(y))
    for d in np.unique(ds):
        for c in (0, 1):
            m = (ds == d) & (y == c)
            if m.any():
                w[m] = 1.0 / m.sum()
    return w


def best_threshold(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    """The threshold, on a grid of 0.05 … 0.95 by 0.01, maximizing weighted balanced accuracy."""
    from sklearn.metrics import balanced_accuracy_score

    grid = np.linspace(0.05, 0.95, 91)
    accs = [balanced_accuracy_score(y.astype(bool), s >= t, sample_weight=w) for t in grid]
    return round(float(grid[int(np.argmax(accs))]), 2)


def cache_dir() -> Path:
    return Path(os.environ.get("RAG_CITATION_CACHE", "/tmp/rag-citation-cache"))


def judge_cache_path(backend: str, cache: Path | None = None) -> Path:
    """Where `benchmarks/checker_cost.py --judge` keeps the judge's P(はい) per pair."""
    return (cache or cache_dir()) / f"judge_{backend}.json"


def _pair_key(p: dict) -> str:
    return hashlib.sha1((p["premise"] + "\x00" + p["hypothesis"]).encode()).hexdigest()


def _fit_judge(pairs, base: np.ndarray, y: np.ndarray, tune: np.ndarray, ds: np.ndarray, judged: dict,
               band: tuple[float, float], model: "JudgeModel | None" = None) -> "tuple[JudgeModel | None, dict]":
    """Fit sigmoid(a·logit(p_base) + b·logit(p_judge) + c) on judged tune pairs in the band."""
    from pipeline.check.model import JudgeModel, logit

    have = np.array([_pair_key(p) in judged for p in pairs])
    if not have.any():
        return None, {}
    pj = np.array([judged.get(_pair_key(p), 0.5) for p in pairs])
    inband = (base >= band[0]) & (base <= band[1])
    fit_sel = have & tune & inband
    if fit_sel.sum() < 10 and model is None:
        return None, {}
    if model is None:
        Z = np.column_stack([[logit(v) for v in base[fit_sel]], [logit(v) for v in pj[fit_sel]]])
        w = _balanced_weights(y[fit_sel], ds[fit_sel])
        m = fit_logistic(Z, y[fit_sel], w)
        # back to raw logits: coef/scale, intercept - sum(coef*mean/scale)
        coef = [m["coef"][k] / m["scale"][k] for k in range(2)]
        intercept = m["intercept"] - sum(m["coef"][k] * m["mean"][k] / m["scale"][k] for k in range(2))
        model = JudgeModel((round(coef[0], 6), round(coef[1], 6)), round(intercept, 6))
    report = {}
    for name in np.unique(ds):
        for half, hm in (("tune", tune), ("holdout", ~tune)):
            sel = have & hm & (ds == name)
            if sel.sum() < 5:
                continue
            comb = [model.combine(b, j) if band[0] <= b <= band[1] else b for b, j in zip(base[sel], pj[sel])]
            report[f"{name}/{half}"] = {
                "n": int(sel.sum()),
                "judge_calls": int((inband & sel).sum()),
                "auroc_base": round(auroc(y[sel], base[sel]), 4),
                "auroc_judge_alone": round(auroc(y[sel], pj[sel]), 4),
                "auroc_base+judge": round(auroc(y[sel], comb), 4),
            }
    return model, report


# L2 penalty of the quadratic logistic regression (chosen on the tune halves: 1-5 all within 0.005 AUROC).
QUADRATIC_L2 = 2.0

DEFAULT_SETS = {
    "jnli": "../shared/evaldata/jnli_v1.3_valid",
    "claims_jsquad": "benchmarks/data/claims_jsquad",
    "claims_roles": "benchmarks/data/claims_roles",
}


def feature_table(checker, pairs: Sequence[dict]) -> np.ndarray:
    """One row per pair: the checker's features in the order its fitted model reads them."""
    rows = []
    for p in pairs:
        f = checker.features(p["premise"], p["hypothesis"])
        rows.append([f[n] for n in checker.feature_names])
    return np.asarray(rows, dtype=float)


def fit_quadratic(X: np.ndarray, y: np.ndarray, w: np.ndarray, names: Sequence[str]) -> "LinearModel":
    """The checker's model for features `names`: a logistic regression on the dense features
    standardized and their pairwise products, plus the sparse mismatch features, each of
    which costs at least `MISMATCH_PRIOR` logits."""
    from pipeline.check.features import SPARSE_FEATURES
    from pipeline.check.model import MISMATCH_PRIOR, LinearModel, expand_quadratic

    dense = [i for i, n in enumerate(names) if n not in SPARSE_FEATURES]
    sparse = [i for i, n in enumerate(names) if n in SPARSE_FEATURES]
    base_scale = X[:, dense].std(axis=0)
    base_scale[base_scale == 0] = 1.0
    shape = LinearModel(
        features=tuple(names), mean=(), scale=(), coef=(), intercept=0.0, quadratic=True,
        dense=tuple(dense), sparse=tuple(sparse),
        base_mean=tuple(round(float(v), 6) for v in X[:, dense].mean(axis=0)),
        base_scale=tuple(round(float(v), 6) for v in base_scale),
    )
    fit = fit_logistic(np.array([expand_quadratic(row, shape) for row in X]), y, w, l2=QUADRATIC_L2)
    # coef is per standardized unit: a mismatch of one costs coef/scale logits.
    n_dense = len(fit["coef"]) - len(sparse)
    coef = [c if j < n_dense else round(min(c, -MISMATCH_PRIOR * fit["scale"][j]), 6) for j, c in enumerate(fit["coef"])]
    return LinearModel(
        features=shape.features, mean=tuple(fit["mean"]), scale=tuple(fit["scale"]), coef=tuple(coef),
        intercept=fit["intercept"], quadratic=True, dense=shape.dense, sparse=shape.sparse,
        base_mean=shape.base_mean, base_scale=shape.base_scale,
    )


def _current_judge() -> "JudgeModel":
    """The judge combination shipped now (the prior when fitted.json cannot be read)."""
    from pipeline.check.model import JUDGE_PRIOR, load_weights
    from pipeline.errors import ModelUnavailable

    try:
        return load_weights().judge
    except ModelUnavailable:
        return JUDGE_PRIOR


def _progress(done: int, total: int) -> None:
    print(f"  embedded {done}/{total}", file=sys.stderr)


def refit(sets: dict[str, str] = DEFAULT_SETS, write: bool = False, cache: Path | None = None,
          settings: "Settings | None" = None, out: Path | None = None, embedder: "Embedder | None" = None) -> dict:
    """Fit the checker's weights (cheap and embed modes) on the tune halves; report both halves.

    With `write`, the weights go to `out` (default: the shipped ``pipeline/check/fitted.json``).
    `settings` choose the embedder (default: `load_settings()`); `embedder` replaces it.
    """
    from pipeline.check import CitationChecker
    from pipeline.check.checker import JUDGE_BAND
    from pipeline.check.citations import claim_text, sentence_spans
    from pipeline.check.evidence import evidence_spans
    from pipeline.check.features import CHEAP_FEATURES
    from pipeline.check.model import (
        FITTED_PATH,
        JUDGE_MIN_FIT,
        JUDGE_PRIOR,
        FittedWeights,
        linear_probability,
        save_weights,
    )
    from pipeline.evaluation.embed_cache import CachingEmbedder, open_vector_cache
    from pipeline.settings import load_settings

    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    settings = settings or load_settings()
    emb = CachingEmbedder(settings, open_vector_cache(settings), inner=embedder)
    pairs, ds_names = [], []
    for name, folder in sets.items():
        ps = load_pairs(folder)
        pairs += ps
        ds_names += [name] * len(ps)
    # No weights: the features do not depend on them, and refit must work when fitted.json is broken.
    checker = CitationChecker(settings, embedder=emb, weights=FittedWeights())
    # Warm the embedding cache in large batches: claims and evidence sentences.
    texts = []
    for p in pairs:
        texts.append(claim_text(p["hypothesis"]))
        texts += [p["premise"][s:e] for s, e in evidence_spans(p["premise"])]
    emb.warm(texts, progress=_progress)
    X = feature_table(checker, pairs)
    y = np.array([int(p["label"] == "entailment") for p in pairs])
    ds = np.array(ds_names)
    tune = np.array([split_of(p) == "tune" for p in pairs])
    np.savez(cache / "features.npz", X=X, names=np.array(checker.feature_names), y=y, ds=ds, tune=tune,
             sentences=np.array([len(sentence_spans(p["premise"])) for p in pairs]))
    n_cheap = len(CHEAP_FEATURES)
    models, thresholds = {}, {}
    report: dict = {}
    for mode, cols in (("cheap", slice(0, n_cheap)), ("embed", slice(None))):
        w = _balanced_weights(y[tune], ds[tune])
        names = checker.feature_names[cols]
        model = fit_quadratic(X[tune][:, cols], y[tune], w, names)
        models[mode] = model
        s = np.array([linear_probability(model, row) for row in X[:, cols]])
        thresholds[mode] = best_threshold(y[tune], s[tune], w)
        for name in sets:
            for half, m in (("tune", tune), ("holdout", ~tune)):
                sel = m & (ds == name)
                r = {"n": int(sel.sum()), "auroc": round(auroc(y[sel], s[sel]), 4)}
                r.update({k: round(v, 4) for k, v in classification(y[sel], s[sel], thresholds[mode]).items()})
                report.setdefault(mode, {}).setdefault(name, {})[half] = r
    # Single-feature baselines on the holdout halves, for the report.
    base = {}
    for j, n in enumerate(checker.feature_names):
        sign = -1 if n.endswith(("mismatch", "conflict", "nouns", "preds", "words", "missing")) else 1
        base[n] = {name: round(auroc(y[~tune & (ds == name)], X[~tune & (ds == name), j] * sign), 4) for name in sets}
    report["single_features_holdout"] = base
    judge = _current_judge()
    judge_path = judge_cache_path(settings.llm_backend, cache)
    if judge_path.exists():
        judged = json.loads(judge_path.read_text("utf-8"))
        s_embed = np.array([linear_probability(models["embed"], row) for row in X])
        model, jrep = _fit_judge(pairs, s_embed, y, tune, ds, judged, JUDGE_BAND)
        n_fit = sum(1 for k, p in enumerate(pairs) if tune[k] and _pair_key(p) in judged
                    and JUDGE_BAND[0] <= s_embed[k] <= JUDGE_BAND[1])
        report["judge_fit"] = {"fitted": model.to_dict() if model else None, "tune_pairs_in_band": n_fit,
                               "min": JUDGE_MIN_FIT}
        if model and n_fit >= JUDGE_MIN_FIT:
            judge = model
        else:  # too few judged pairs: keep the prior, report what it does
            judge = JUDGE_PRIOR
            _, jrep = _fit_judge(pairs, s_embed, y, tune, ds, judged, JUDGE_BAND, model=JUDGE_PRIOR)
        report["judge"] = jrep
    weights = FittedWeights(models, thresholds, judge)
    if write:
        save_weights(weights, out or FITTED_PATH)
    return {"fitted": weights.to_dict(), "report": report}


def _main(argv: list[str]) -> None:  # pragma: no cover - a maintenance command
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipeline.evaluation.citations")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refit", help="fit the checker's weights on the tune halves")
    r.add_argument("--write", action="store_true", help="rewrite pipeline/check/fitted.json")
    args = ap.parse_args(argv)
    if args.cmd == "refit":
        out = refit(write=args.write)
        print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv[1:])
