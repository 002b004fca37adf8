"""Errors the pipeline raises on purpose. The CLI turns each into its exit code.

    RagError (exit 1)
    ├── ConfigError (2)          a setting is invalid
    ├── IndexNotFound (3)        no index at the given directory
    ├── IndexLocked (4)          another ingest holds the lock
    ├── ReadError (5)            a file cannot be read (the ingest skips it)
    ├── ModelUnavailable (6)     an embedded model or optional package is missing
    └── BackendUnavailable (7)   an LLM backend cannot be reached
"""

from __future__ import annotations


class RagError(Exception):
    """Base class: `str(err)` is the message shown to the user."""

    exit_code = 1


class ConfigError(RagError):
    """A setting cannot be used: an unknown key (with the closest valid one), a value
    of the wrong type or outside what is allowed, an unknown RAG_* variable, a rag.toml
    that is not TOML. One line per problem, naming the key and where it came from."""

    exit_code = 2


class IndexNotFound(RagError):
    exit_code = 3

    def __init__(self, index_dir: str):
        self.index_dir = index_dir
        super().__init__(
            f"インデックスがありません: {index_dir}\n"
            f"先に `rag ingest <フォルダ> --index {index_dir}` を実行してください。"
        )


class IndexLocked(RagError):
    exit_code = 4

    def __init__(self, index_dir: str):
        self.index_dir = index_dir
        super().__init__(
            f"別の取り込み (rag ingest) が実行中です: {index_dir}\n"
            "終わるのを待つか、--wait を付けて再実行してください。"
        )


class ReadError(RagError):
    """A file that cannot be read. `reason` is short and shown in summaries."""

    exit_code = 5

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ModelUnavailable(RagError):
    exit_code = 6


class BackendUnavailable(RagError):
    exit_code = 7
