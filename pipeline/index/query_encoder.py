"""Embedding one query at a time, fast: the model's own modules, minus `encode`'s batching.

A question is one short text. `SentenceTransformer.encode` spends part of its time on
batching machinery built for thousands of passages, and eager PyTorch on Python dispatch
between small matrix products. Measured on the 300 jaquad_dev questions of
`benchmarks/retrieval_latency.py` (2-core VM, same run, p50): `encode` 50.5 ms, the
modules called directly 45.6 ms, the transformer as a frozen TorchScript graph 34.9 ms —
the same vectors (largest difference 3e-8).

The frozen graph costs about 0.7 s to build (and ~20 MB: it shares the weights), so the
embedder builds it at the second question of a process (a one-shot `rag ask` never pays
for it), and only keeps it when it reproduces `encode` on probe texts of different
lengths; otherwise the direct path stays and the log says why.

This is the torch path: user-configured models, and the embedded model only when its ONNX
export was refused (`pipeline.models.e5_onnx`, which runs questions without torch).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Probes of different lengths: a graph traced on one length must hold on the others.
PROBES = (
    "東京",
    "8世紀に日本の首都はどこでしたか。",
    "奈良時代の都は平城京で、710年に藤原京から移された。" * 8,
)
TOLERANCE = 1e-4


def _features(model: Any, text: str) -> dict:
    return model.preprocess([text])


def _tensor_keys(features: dict) -> list[str]:
    import torch

    return [k for k, v in features.items() if isinstance(v, torch.Tensor)]


def _unit(v: Any) -> np.ndarray:
    v = v.float().numpy() if hasattr(v, "numpy") else np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return (v / n if n else v).astype(np.float32)


def encode_one(model: Any, text: str) -> np.ndarray:
    """The model's modules called in order on one text (no batching machinery), unit length."""
    import torch

    with torch.inference_mode():
        return _unit(model(_features(model, text))["sentence_embedding"][0])


class FrozenQueryEncoder:
    """One text → unit vector, with the transformer module run as a frozen TorchScript graph."""

    def __init__(self, model: Any, graph: Any, keys: list[str], output_name: str):
        self.model = model
        self.graph = graph
        self.keys = keys
        self.output_name = output_name

    def __call__(self, text: str) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = _features(self.model, text)
            features[self.output_name] = self.graph(*(features[k] for k in self.keys))
            for module in list(self.model)[1:]:
                features = module(features)
            return _unit(features["sentence_embedding"][0])

    @classmethod
    def build(cls, model: Any, prefix: str = "") -> "FrozenQueryEncoder | None":
        """Trace and freeze the model's transformer; None (and a log line) where it cannot be trusted."""
        try:
            import torch

            first = model[0]
            transformer = getattr(first, "auto_model", None) or first.model
            output_name = getattr(first, "module_output_name", "token_embeddings")
            example = _features(model, prefix + PROBES[1])
            keys = _tensor_keys(example)

            class _LastHidden(torch.nn.Module):
                def __init__(self, inner: Any):
                    super().__init__()
                    self.inner = inner

                def forward(self, *tensors: Any) -> Any:
                    return self.inner(**dict(zip(keys, tensors)), return_dict=False)[0]

            with warnings.catch_warnings(), torch.no_grad():
                # The tracer warns about Python-level branches; the probes below are the check.
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(
                    _LastHidden(transformer).eval(), tuple(example[k] for k in keys), check_trace=False
                )
                graph = torch.jit.freeze(traced)
            encoder = cls(model, graph, keys, output_name)
            for probe in PROBES:
                want = model.encode(
                    [prefix + probe], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                )[0]
                diff = float(np.abs(np.asarray(want, dtype=np.float32) - encoder(prefix + probe)).max())
                if not diff <= TOLERANCE:
                    log.info("frozen query graph differs from encode by %.2g; not used", diff)
                    return None
            return encoder
        except Exception as err:  # any failure leaves the direct path, which is exact
            log.info("frozen query graph unavailable (%s); queries use the direct path", err)
            return None
