"""Errors the pipeline raises on purpose. The CLI turns each into its exit code.

    RagError (exit 1)
    ├── ConfigError (2)          a setting is invalid
    ├── IndexNotFound (3)        no index at the given directory
    ├── IndexLocked (4)          another ingest holds the lock
    ├── ReadError (5)            a file cannot be read (the ingest skips it)
    ├── ModelUnavailable (6)     an embedded model or optional package is missing
    ├── BackendUnavailable (7)   an LLM backend cannot be reached
    ├── IndexCorrupt (8)         a file of the index is damaged; `rag ingest` rebuilds it from the notes
    ├── DiskFull (9)             the disk (or a file size limit) ran out while an ingest wrote
    └── InvalidInput (2)         a question, a count or a path given to a command cannot be used
"""

from __future__ import annotations

import shlex


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


class IndexCorrupt(RagError):
    """A file the index keeps is damaged or disagrees with the manifest.

    Raised when the file is read: `path` is the file (or folder), `problem` what is
    wrong with it. The index is a copy derived from the notes, so the way out is one
    `rag ingest` over them (`roots`: the folders the index was built from, when known).
    """

    exit_code = 8

    def __init__(self, path: str, problem: str, index_dir: str, roots: tuple[str, ...] | list[str] = ()):
        self.path = path
        self.problem = problem
        self.index_dir = index_dir
        self.roots = tuple(roots)
        folders = " ".join(shlex.quote(r) for r in self.roots) or "<フォルダ>"
        super().__init__(
            f"インデックスが壊れています: {path} ({problem})。"
            f"`rag ingest {folders} --index {shlex.quote(index_dir)}` でノートから作り直せます。"
        )


class DiskFull(RagError):
    """An ingest could not write (no space left, a quota or a file size limit).

    Nothing is committed before the manifest is replaced, so the previous index is
    still the one readers see.
    """

    exit_code = 9

    def __init__(self, path: str):
        self.path = path
        super().__init__(
            f"ディスクがいっぱいです: {path}\n"
            "前のインデックスはそのまま使えます。空きを作ってから `rag ingest` をもう一度実行してください。"
        )


class InvalidInput(RagError):
    """A question, a count or a path that a command cannot use (an empty question, `-k 0`)."""

    exit_code = 2
