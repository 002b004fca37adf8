"""LLM backends: one small interface (`LLMBackend`), one module per backend, a fake.

    embedded    llama_cpp.EmbeddedBackend      Qwen2.5-Coder-1.5B GGUF in-process (default, offline)
    ollama      ollama.OllamaBackend           an Ollama server (/api/chat, /api/generate)
    openai      openai_compat.OpenAICompatBackend  any OpenAI-compatible server (/chat/completions)
    extractive  extractive.ExtractiveBackend   no LLM: quotes source sentences

`load_backend(settings)` builds the one named by `settings.llm_backend`. Backends load
their model or connect on first use, so building one is cheap; an unreachable
server raises `BackendUnavailable` at the first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.answer.backends.base import (
    BackendInfo,
    Completion,
    FakeBackend,
    LLMBackend,
    as_llama_index_llm,
    estimate_tokens,
    format_chat,
    parse_chat,
)
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "Completion",
    "FakeBackend",
    "LLMBackend",
    "as_llama_index_llm",
    "estimate_tokens",
    "format_chat",
    "load_backend",
    "parse_chat",
]

BACKENDS = ("embedded", "ollama", "openai", "extractive")


def load_backend(settings: "Settings | None", name: str | None = None) -> LLMBackend:
    """The backend `name` (default: `settings.llm_backend`). `settings` None: loaded
    from rag.toml and the environment."""
    if settings is None:
        from pipeline.settings import load_settings

        settings = load_settings()
    name = name or settings.llm_backend
    if name == "embedded":
        from pipeline.answer.backends.llama_cpp import EmbeddedBackend

        return EmbeddedBackend(settings)
    if name == "ollama":
        from pipeline.answer.backends.ollama import OllamaBackend

        return OllamaBackend(settings)
    if name == "openai":
        from pipeline.answer.backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(settings)
    if name == "extractive":
        from pipeline.answer.backends.extractive import ExtractiveBackend

        return ExtractiveBackend(settings)
    raise ConfigError(
        f"LLM バックエンド {name!r} はありません: {', '.join(BACKENDS)} のどれかを "
        "llm_backend (環境変数 RAG_LLM_BACKEND、--backend) に指定してください。"
    )
