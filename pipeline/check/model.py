"""The fitted combination: features -> calibrated P(the cited sources support the claim).

One logistic regression per checker mode ("cheap": no semantic stage; "embed": with
the embedder's cosine) on the dense features standardized, all their pairwise products,
and the sparse mismatch features taken linearly: a product of rare features
extrapolates wildly, and each mismatch costs at least `MISMATCH_PRIOR` logits even
where the tuning data hold too few examples to say so (modality: almost none).

The weights are data, `fitted.json` next to this module, written by
``python -m pipeline.evaluation.citations refit --write`` (fitted on the tune halves of
JNLI and of our claim sets; `benchmarks/results/citations.md` has the held-out numbers)
and read once by `load_weights`. A mode without weights (a new semantic stage before its
first fit) falls back to hand weights (`fallback_probability`).

The LLM judge, when there is one, enters through `JudgeModel`: sigmoid(c + a·logit(p) +
b·logit(p_judge)). Until enough judged pairs are at hand to fit it (`JUDGE_MIN_FIT` in
the band) the prior `JUDGE_PRIOR` is used: half the judge's log-odds, centred on
P(はい) = 0.1, where the embedded 1.5B model separated supported from unsupported claims
(it leans to いいえ): logit(p) + 0.5 * (logit(p_judge) - logit(0.1)).
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from pipeline.errors import ModelUnavailable

__all__ = [
    "FITTED_PATH",
    "FittedWeights",
    "JUDGE_MIN_FIT",
    "JUDGE_PRIOR",
    "JudgeModel",
    "LinearModel",
    "MISMATCH_PRIOR",
    "REFIT_COMMAND",
    "expand_quadratic",
    "fallback_probability",
    "linear_probability",
    "load_weights",
    "logit",
    "save_weights",
    "sigmoid",
]

FITTED_PATH = Path(__file__).with_name("fitted.json")
REFIT_COMMAND = "python -m pipeline.evaluation.citations refit --write"
FORMAT_VERSION = 1
MISMATCH_PRIOR = 2.0
JUDGE_MIN_FIT = 100


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def logit(p: float, eps: float = 1e-4) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class LinearModel:
    """A fitted logistic regression over the features `features`, in that order.

    With `quadratic`, `x` is first expanded (`expand_quadratic`): the features at `dense`
    standardized by `base_mean`/`base_scale` and their pairwise products, then the ones
    at `sparse` as they are. `mean`/`scale` standardize the expanded vector.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    quadratic: bool = False
    dense: tuple[int, ...] = ()
    sparse: tuple[int, ...] = ()
    base_mean: tuple[float, ...] = ()
    base_scale: tuple[float, ...] = ()

    def expanded_size(self) -> int:
        if not self.quadratic:
            return len(self.features)
        n = len(self.dense)
        return n + n * (n + 1) // 2 + len(self.sparse)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @staticmethod
    def from_dict(d: dict) -> "LinearModel":
        return LinearModel(
            features=tuple(d["features"]), mean=tuple(d["mean"]), scale=tuple(d["scale"]),
            coef=tuple(d["coef"]), intercept=float(d["intercept"]), quadratic=bool(d.get("quadratic", False)),
            dense=tuple(d.get("dense", ())), sparse=tuple(d.get("sparse", ())),
            base_mean=tuple(d.get("base_mean", ())), base_scale=tuple(d.get("base_scale", ())),
        )

    def problems(self) -> list[str]:
        """What makes these weights unusable (empty when they are fine)."""
        out = []
        if self.quadratic:
            if sorted(self.dense + self.sparse) != list(range(len(self.features))):
                out.append("dense + sparse do not index every feature once")
            if not len(self.base_mean) == len(self.base_scale) == len(self.dense):
                out.append("base_mean / base_scale do not match dense")
        if not len(self.mean) == len(self.scale) == len(self.coef) == self.expanded_size():
            out.append(f"mean / scale / coef need {self.expanded_size()} values")
        return out


@dataclass(frozen=True)
class JudgeModel:
    """sigmoid(intercept + coef[0]·logit(p) + coef[1]·logit(p_judge))."""

    coef: tuple[float, float]
    intercept: float

    def combine(self, p: float, p_judge: float) -> float:
        return sigmoid(self.intercept + self.coef[0] * logit(p) + self.coef[1] * logit(p_judge))

    def to_dict(self) -> dict:
        return {"coef": list(self.coef), "intercept": self.intercept}

    @staticmethod
    def from_dict(d: dict) -> "JudgeModel":
        a, b = d["coef"]
        return JudgeModel((float(a), float(b)), float(d["intercept"]))


JUDGE_PRIOR = JudgeModel((1.0, 0.5), 1.098612)


@dataclass(frozen=True)
class FittedWeights:
    """Everything `fitted.json` holds: a model and a threshold per mode, the judge's combination."""

    models: dict[str, LinearModel] = field(default_factory=dict)  # by mode
    thresholds: dict[str, float] = field(default_factory=dict)  # by mode: P(supported) to accept
    judge: JudgeModel = JUDGE_PRIOR
    path: Path | None = field(default=None, compare=False)  # the file they were read from

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            **{mode: m.to_dict() for mode, m in self.models.items()},
            "judge": self.judge.to_dict(),
            "threshold": dict(self.thresholds),
        }

    @staticmethod
    def from_dict(d: dict, path: Path | None = None) -> "FittedWeights":
        if d.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {d.get('format')!r}, expected {FORMAT_VERSION}")
        models = {k: LinearModel.from_dict(v) for k, v in d.items() if k not in ("format", "judge", "threshold")}
        judge = JudgeModel.from_dict(d["judge"]) if d.get("judge") else JUDGE_PRIOR
        thresholds = {k: float(v) for k, v in d.get("threshold", {}).items()}
        return FittedWeights(models, thresholds, judge, path)


def _unusable(path: Path, why: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"引用チェッカーの重みファイルが使えません: {path}\n({why})\n"
        f"`{REFIT_COMMAND}` で作り直すか、パッケージを入れ直してください。"
    )


@functools.lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int) -> FittedWeights:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        weights = FittedWeights.from_dict(data, path)
    except (ValueError, KeyError, TypeError) as e:
        raise _unusable(path, f"{type(e).__name__}: {e}") from None
    for mode, model in weights.models.items():
        problems = model.problems()
        if problems:
            raise _unusable(path, f"{mode}: {problems[0]}")
    for mode, t in weights.thresholds.items():
        if not 0.0 < t < 1.0:
            raise _unusable(path, f"threshold {mode} = {t}")
    return weights


def load_weights(path: Path | str = FITTED_PATH) -> FittedWeights:
    """The fitted weights in `path` (read once per file version); ModelUnavailable naming the
    file and the command that rebuilds it when it is missing or broken."""
    path = Path(path)
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        raise _unusable(path, "ファイルがありません") from None
    return _load(path, mtime_ns)


def save_weights(weights: FittedWeights, path: Path | str = FITTED_PATH) -> Path:
    """Write `weights` as JSON, one line per field, atomically."""
    path = Path(path)
    lines = ["{"]
    items = list(weights.to_dict().items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, dict) and any(isinstance(v, list) for v in value.values()):
            inner = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()]
            lines.append(f"  {json.dumps(key)}: {{\n" + ",\n".join(inner) + f"\n  }}{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def expand_quadratic(x: Sequence[float], model: LinearModel) -> list[float]:
    """The dense features standardized, all their pairwise products, then the sparse ones as they are."""
    dense = [x[i] for i in model.dense]
    z = [(v - mu) / (sc or 1.0) for v, mu, sc in zip(dense, model.base_mean, model.base_scale)]
    n = len(z)
    return z + [z[i] * z[j] for i in range(n) for j in range(i, n)] + [x[i] for i in model.sparse]


def linear_probability(model: LinearModel | None, x: Sequence[float]) -> float:
    """sigmoid(coef · standardized(x) + intercept); without a model, `fallback_probability`."""
    if model is None or not model.coef:
        return fallback_probability(x)
    if model.quadratic:
        x = expand_quadratic(x, model)
    z = model.intercept
    for v, mu, sc, w in zip(x, model.mean, model.scale, model.coef):
        z += w * (v - mu) / (sc or 1.0)
    return sigmoid(z)


def fallback_probability(x: Sequence[float]) -> float:
    """Hand weights used only before the first fit (coverage minus mismatches); `x` in
    `CHEAP_FEATURES` order."""
    from pipeline.check.features import CHEAP_FEATURES

    f = dict(zip(CHEAP_FEATURES, x))
    z = 6 * (f["coverage"] - 0.8) - 2.5 * (f["number_mismatch"] + f["name_mismatch"] + f["role_conflict"])
    z -= 2.0 * (f["negation_mismatch"] + f["modality_mismatch"])
    return sigmoid(z)
