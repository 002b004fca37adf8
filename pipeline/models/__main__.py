"""`python -m pipeline.models prepare`: build both embedded models into the cache directory
(and the embedding model's ONNX export, checked against torch: `pipeline.models.e5_onnx`)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.errors import ModelUnavailable
from pipeline.models.gguf import prepare_gguf


def prepare_embedder(cache_dir: Path) -> Path:
    from pipeline.models.e5 import build_embedded_e5, embedded_e5_path

    return build_embedded_e5(embedded_e5_path(cache_dir))


def prepare_onnx(model_dir: Path) -> str:
    """Export the embedded model to ONNX and check it against torch; one line saying the outcome."""
    from pipeline.models.e5_onnx import export_onnx

    marker = export_onnx(model_dir)
    line = f"{'accepted' if marker.get('accepted') else 'NOT used (torch stays)'}: {marker.get('reason')}"
    int8 = marker.get("int8") or {}
    if int8:
        line += f"; int8 {'offered' if int8.get('accepted') else 'not offered'}: {int8.get('reason')}"
    return line


def main(argv: list[str]) -> int:
    from pipeline.settings import load_settings

    if argv[:1] != ["prepare"]:
        print("usage: python -m pipeline.models prepare", file=sys.stderr)
        return 2
    cache = load_settings().cache_dir
    model_dir = prepare_embedder(cache)
    print(f"embedder: {model_dir}")
    print(f"embedder onnx: {prepare_onnx(model_dir)}")
    try:
        print(f"llm: {prepare_gguf(cache)}")
    except ModelUnavailable as err:
        print(f"llm: skipped ({err})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
