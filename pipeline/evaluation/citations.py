"""`rag eval citations`: how well the citation checker separates supported from unsupported.

A data folder holds ``pairs.jsonl`` lines ``{"premise", "hypothesis", "label", "pair_id",
"meta"}``; a pair is *supported* when ``label == "entailment"``. `evaluate` scores every
pair with `CitationChecker.support` and reports AUROC (supported vs not), and at the
checker's threshold the accuracy and the precision / recall of "unsupported", plus the
seconds per pair.

The fitted weights of the checker (`pipeline.answer.checker.FITTED`) come from `refit`:
features on the *tune* half of each dataset (JNLI valid, claims_jsquad, claims_roles; halves
by a hash of the article or pair id, `split_of`), a class- and dataset-balanced logistic
regression in numpy, reported on the *holdout* half::

    python -m pipeline.evaluation.citations refit --write      # rewrites FITTED in checker.py

Embeddings computed for the fit are cached under ``$RAG_CITATION_CACHE`` (default
``/tmp/rag-citation-cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "CachingEmbedder",
    "CitationEval",
    "auroc",
    "classification",
    "evaluate",
    "fit_logistic",
    "load_pairs",
    "refit",
    "run_eval",
    "split_of",
]


def load_pairs(data_dir: str | Path, limit: int | None = None, split: str = "all") -> list[dict]:
    """Pairs from ``DATA_DIR/pairs.jsonl`` (or a .jsonl file), optionally one half, first `limit`."""
    if limit is not None and limit < 0:
        from pipeline.errors import InvalidInput

        raise InvalidInput(f"--limit は 0 以上にしてください: {limit}")
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
    """Area under the ROC curve (ties count one half); labels 1 = positive."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
    mode: str  # "cheap" | "embed" (+ "+judge")

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


def evaluate(checker, pairs: Sequence[dict], progress: Callable[[int], None] | None = None) -> tuple[CitationEval, list[float]]:
    """Score every pair with `checker.support`; the summary and the scores."""
    labels = [int(p["label"] == "entailment") for p in pairs]
    scores: list[float] = []
    t0 = time.perf_counter()
    calls0 = checker.judge_calls
    for i, p in enumerate(pairs):
        scores.append(checker.support(p["premise"], p["hypothesis"]))
        if progress and (i + 1) % 100 == 0:
            progress(i + 1)
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
        **cls,
    )
    return ev, scores


def run_eval(settings, data_dir: str | Path, limit: int | None = None, split: str = "all",
             use_embedder: bool = True, judge=None, progress=None) -> CitationEval:
    """What `rag eval citations` runs: load the pairs, build the checker, evaluate."""
    from pipeline.answer.checker import CitationChecker

    pairs = load_pairs(data_dir, limit=limit, split=split)
    embedder = None
    if use_embedder:
        from pipeline.index.embedder import load_embedder

        embedder = load_embedder(settings)
    checker = CitationChecker(settings, embedder=embedder, judge=judge)
    ev, _ = evaluate(checker, pairs, progress=progress)
    return ev


# --------------------------------------------------------------------------
# Fitting the combination
# --------------------------------------------------------------------------


class CachingEmbedder:
    """Wraps an `Embedder`; remembers passage vectors by text, persisted to an .npz file."""

    def __init__(self, inner, path: Path):
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.path = path
        self.cache: dict[str, np.ndarray] = {}
        if path.exists():
            data = np.load(path, allow_pickle=False)
            for k, v in zip(data["keys"], data["vectors"]):
                self.cache[str(k)] = v
        self.dirty = False

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def warm(self, texts: Iterable[str], batch: int = 256) -> None:
        todo = list(dict.fromkeys(t for t in texts if self._key(t) not in self.cache))
        for i in range(0, len(todo), batch):
            part = todo[i:i + batch]
            for t, v in zip(part, self.inner.embed_passages(part)):
                self.cache[self._key(t)] = np.asarray(v, dtype=np.float32)
            self.dirty = True
            print(f"  embedded {min(i + batch, len(todo))}/{len(todo)}", file=sys.stderr)
        self.save()

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if self._key(t) not in self.cache]
        if missing:
            for t, v in zip(missing, self.inner.embed_passages(missing)):
                self.cache[self._key(t)] = np.asarray(v, dtype=np.float32)
            self.dirty = True
        return np.stack([self.cache[self._key(t)] for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.cache), dtype="U40")
        vecs = np.stack(list(self.cache.values()))
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vectors=vecs)
        os.replace(tmp, self.path)
        self.dirty = False


def fit_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1.0, iters: int = 50) -> dict:
    """Weighted, L2-regularized logistic regression by Newton's method on standardized X."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    Z = np.hstack([(X - mean) / scale, np.ones((len(X), 1))])
    beta = np.zeros(Z.shape[1])
    reg = np.full(Z.shape[1], l2)
    reg[-1] = 0.0
    w = w / w.sum() * len(w)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Z @ beta))
        g = Z.T @ (w * (p - y)) + reg * beta
        H = (Z * (w * p * (1 - p))[:, None]).T @ Z + np.diag(reg)
        step = np.linalg.solve(H, g)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return {
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "coef": [round(float(v), 6) for v in beta[:-1]],
        "intercept": round(float(beta[-1]), 6),
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


def _best_threshold(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    """The threshold maximizing weighted balanced accuracy."""
    best, best_t = -1.0, 0.5
    for t in np.linspace(0.05, 0.95, 91):
        pred = s >= t
        acc = float(np.sum(w * (pred == y.astype(bool))) / w.sum())
        if acc > best:
            best, best_t = acc, float(t)
    return round(best_t, 2)


def cache_dir() -> Path:
    return Path(os.environ.get("RAG_CITATION_CACHE", "/tmp/rag-citation-cache"))


def judge_cache_path(backend: str) -> Path:
    """Where `benchmarks/checker_cost.py --judge` keeps the judge's P(はい) per pair."""
    return cache_dir() / f"judge_{backend}.json"


def _pair_key(p: dict) -> str:
    return hashlib.sha1((p["premise"] + "\x00" + p["hypothesis"]).encode()).hexdigest()


def _fit_judge(pairs, base: np.ndarray, y: np.ndarray, tune: np.ndarray, ds: np.ndarray, judged: dict,
               band: tuple[float, float], model: dict | None = None) -> tuple[dict | None, dict]:
    """Fit sigmoid(a·logit(p_base) + b·logit(p_judge) + c) on judged tune pairs in the band."""
    from pipeline.answer.checker import _logit

    have = np.array([_pair_key(p) in judged for p in pairs])
    if not have.any():
        return None, {}
    pj = np.array([judged.get(_pair_key(p), 0.5) for p in pairs])
    inband = (base >= band[0]) & (base <= band[1])
    fit_sel = have & tune & inband
    if fit_sel.sum() < 10 and model is None:
        return None, {}
    if model is None:
        Z = np.column_stack([[_logit(v) for v in base[fit_sel]], [_logit(v) for v in pj[fit_sel]]])
        w = _balanced_weights(y[fit_sel], ds[fit_sel])
        m = fit_logistic(Z, y[fit_sel], w)
        # back to raw logits: coef/scale, intercept - sum(coef*mean/scale)
        coef = [m["coef"][k] / m["scale"][k] for k in range(2)]
        intercept = m["intercept"] - sum(m["coef"][k] * m["mean"][k] / m["scale"][k] for k in range(2))
        model = {"coef": [round(c, 6) for c in coef], "intercept": round(intercept, 6)}
    coef = model["coef"]
    report = {}
    for name in np.unique(ds):
        for half, hm in (("tune", tune), ("holdout", ~tune)):
            sel = have & hm & (ds == name)
            if sel.sum() < 5:
                continue
            comb = []
            for b, j in zip(base[sel], pj[sel]):
                if band[0] <= b <= band[1]:
                    z = model["intercept"] + coef[0] * _logit(b) + coef[1] * _logit(j)
                    comb.append(1 / (1 + np.exp(-z)))
                else:
                    comb.append(b)
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
    from pipeline.answer.checker import FEATURES

    names = FEATURES[checker.mode]
    rows = []
    for p in pairs:
        f = checker.features(p["premise"], p["hypothesis"])
        rows.append([f[n] for n in names])
    return np.asarray(rows, dtype=float)


def refit(sets: dict[str, str] = DEFAULT_SETS, write: bool = False, cache: Path | None = None) -> dict:
    """Fit `FITTED` (cheap and embed modes) on the tune halves; report both halves."""
    from pipeline.answer import checker as ck
    from pipeline.index.embedder import load_embedder
    from pipeline.settings import load_settings

    cache = cache or cache_dir()
    settings = load_settings()
    inner = load_embedder(settings)
    emb = CachingEmbedder(inner, cache / (hashlib.sha1(inner.name.encode()).hexdigest()[:12] + ".npz"))
    pairs, ds_names = [], []
    for name, folder in sets.items():
        ps = load_pairs(folder)
        pairs += ps
        ds_names += [name] * len(ps)
    checker = ck.CitationChecker(settings, embedder=emb)
    # Warm the embedding cache in large batches: claims and evidence sentences.
    texts = []
    for p in pairs:
        texts.append(ck.claim_text(p["hypothesis"]))
        texts += [p["premise"][s:e] for s, e in ck._sentence_spans(p["premise"]) if not ck.is_instruction(p["premise"][s:e])]
    emb.warm(texts)
    X = feature_table(checker, pairs)
    emb.save()
    np.savez(cache / "features.npz", X=X, names=np.array(ck.FEATURES["embed"]),
             y=np.array([int(p["label"] == "entailment") for p in pairs]), ds=np.array(ds_names),
             tune=np.array([split_of(p) == "tune" for p in pairs]),
             sentences=np.array([len(ck._sentence_spans(p["premise"])) for p in pairs]))
    y = np.array([int(p["label"] == "entailment") for p in pairs])
    ds = np.array(ds_names)
    tune = np.array([split_of(p) == "tune" for p in pairs])
    n_cheap = len(ck.CHEAP_FEATURES)
    fitted = {"cheap": None, "embed": None, "judge": ck.FITTED.get("judge"), "threshold": {}}
    report: dict = {}
    for mode, cols in (("cheap", slice(0, n_cheap)), ("embed", slice(None))):
        w = _balanced_weights(y[tune], ds[tune])
        Xm = X[:, cols]
        names = ck.FEATURES[mode]
        dense = [i for i, n in enumerate(names) if n not in ck.SPARSE_FEATURES]
        sparse = [i for i, n in enumerate(names) if n in ck.SPARSE_FEATURES]
        base_mean = Xm[tune][:, dense].mean(axis=0)
        base_scale = Xm[tune][:, dense].std(axis=0)
        base_scale[base_scale == 0] = 1.0
        model = {
            "quadratic": True,
            "dense": dense,
            "sparse": sparse,
            "base_mean": [round(float(v), 6) for v in base_mean],
            "base_scale": [round(float(v), 6) for v in base_scale],
        }
        XX = np.array([ck.expand_quadratic(row, model) for row in Xm])
        model.update(fit_logistic(XX[tune], y[tune], w, l2=QUADRATIC_L2))
        # Each mismatch costs at least MISMATCH_PRIOR logits (coef is per standardized unit).
        for k in range(len(sparse)):
            j = len(model["coef"]) - len(sparse) + k
            model["coef"][j] = round(min(model["coef"][j], -ck.MISMATCH_PRIOR * model["scale"][j]), 6)
        fitted[mode] = model
        s = np.array([ck.linear_probability(model, row) for row in X[:, cols]])
        fitted["threshold"][mode] = _best_threshold(y[tune], s[tune], w)
        for name in sets:
            for half, m in (("tune", tune), ("holdout", ~tune)):
                sel = m & (ds == name)
                r = {"n": int(sel.sum()), "auroc": round(auroc(y[sel], s[sel]), 4)}
                r.update({k: round(v, 4) for k, v in classification(y[sel], s[sel], fitted["threshold"][mode]).items()})
                report.setdefault(mode, {}).setdefault(name, {})[half] = r
    # Single-feature baselines on the holdout halves, for the report.
    names = ck.FEATURES["embed"]
    base = {}
    for j, n in enumerate(names):
        base[n] = {name: round(auroc(y[~tune & (ds == name)], X[~tune & (ds == name), j] * (-1 if n.endswith(("mismatch", "conflict", "nouns", "preds", "words", "missing")) else 1)), 4) for name in sets}
    report["single_features_holdout"] = base
    judge_path = judge_cache_path(getattr(settings, "llm_backend", "embedded"))
    if judge_path.exists():
        judged = json.loads(judge_path.read_text("utf-8"))
        s_embed = np.array([ck.linear_probability(fitted["embed"], row) for row in X])
        model, jrep = _fit_judge(pairs, s_embed, y, tune, ds, judged, ck.JUDGE_BAND)
        n_fit = sum(1 for k, p in enumerate(pairs) if tune[k] and _pair_key(p) in judged
                    and ck.JUDGE_BAND[0] <= s_embed[k] <= ck.JUDGE_BAND[1])
        report["judge_fit"] = {"fitted": model, "tune_pairs_in_band": n_fit, "min": ck.JUDGE_MIN_FIT}
        if model and n_fit >= ck.JUDGE_MIN_FIT:
            fitted["judge"] = model
        else:  # too few judged pairs: keep the prior, report what it does
            fitted["judge"] = ck.JUDGE_PRIOR
            _, jrep = _fit_judge(pairs, s_embed, y, tune, ds, judged, ck.JUDGE_BAND, model=ck.JUDGE_PRIOR)
        report["judge"] = jrep
    if write:
        _write_fitted(fitted)
    return {"fitted": fitted, "report": report}


def _write_fitted(fitted: dict) -> None:
    from pipeline.answer import checker as ck

    path = Path(ck.__file__)
    src = path.read_text(encoding="utf-8")
    a = src.index("# BEGIN FITTED\n") + len("# BEGIN FITTED\n")
    b = src.index("# END FITTED")
    lines = ["FITTED: dict = {"]
    for key, value in fitted.items():
        if isinstance(value, dict) and any(isinstance(v, list) and len(v) > 8 for v in value.values()):
            lines.append(f"    {json.dumps(key)}: {{")
            for k, v in value.items():
                lines.append(f"        {json.dumps(k)}: {json.dumps(v)},")
            lines.append("    },")
        else:
            lines.append(f"    {json.dumps(key)}: {json.dumps(value)},")
    lines.append("}")
    body = "\n".join(lines).replace(": true,", ": True,").replace(": false,", ": False,") + "\n"
    path.write_text(src[:a] + body + src[b:], encoding="utf-8")


def _main(argv: list[str]) -> None:  # pragma: no cover - a maintenance command
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipeline.evaluation.citations")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refit", help="fit the checker's weights on the tune halves")
    r.add_argument("--write", action="store_true", help="rewrite FITTED in pipeline/answer/checker.py")
    args = ap.parse_args(argv)
    if args.cmd == "refit":
        out = refit(write=args.write)
        print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv[1:])
