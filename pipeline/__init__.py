"""rag: a Japanese-first, long-context RAG pipeline with checked citations.

The public surface is small and import-light; heavy libraries load on first use.
"""

from pipeline.api import answerer_for, ask, ingest, open_index, search, settings_for, status
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

__all__ = sorted(
    [
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
        "ingest",
        "load_settings",
        "open_index",
        "search",
        "settings_for",
        "status",
    ]
)
