"""rag: a Japanese-first, long-context RAG pipeline with checked citations.

The public surface is small and import-light; heavy libraries load on first use.
"""

# `ingest` stays `pipeline.api.ingest`: bound here it would be replaced by the subpackage
# `pipeline.ingest` as soon as that is first imported (by the first call, for one).
from pipeline.api import answerer_for, ask, open_index, prepare_long_context, search, settings_for, status
from pipeline.documents import Chunk, Document, Section, Span
from pipeline.errors import (
    BackendUnavailable,
    ConfigError,
    DiskFull,
    IndexCorrupt,
    IndexLocked,
    IndexNotFound,
    InvalidInput,
    ModelUnavailable,
    RagError,
    ReadError,
)
from pipeline.settings import Settings, load_settings

# Sorted; tests/test_exported_members.py checks that it lists every public name imported above.
__all__ = [
    "BackendUnavailable",
    "Chunk",
    "ConfigError",
    "DiskFull",
    "Document",
    "IndexCorrupt",
    "IndexLocked",
    "IndexNotFound",
    "InvalidInput",
    "ModelUnavailable",
    "RagError",
    "ReadError",
    "Section",
    "Settings",
    "Span",
    "answerer_for",
    "ask",
    "load_settings",
    "open_index",
    "prepare_long_context",
    "search",
    "settings_for",
    "status",
]
