"""Embedders: sentence-transformers models, offline, with e5's query/passage prefixes.

`Embedder` is the small interface the rest of the pipeline uses; `HashEmbedder`
is a deterministic model-free stand-in for plumbing tests (like httpx's MockTransport).
The embedded model runs as `OnnxE5Embedder` (onnxruntime, no torch: `pipeline.models.e5_onnx`)
when its export matched the torch model; otherwise, and for any user-configured model,
`SentenceTransformerEmbedder`. `query_path` says which ("onnx", or "direct"/"frozen" on
torch) and `query_path_reason` why torch was kept for the embedded model.
`as_llama_index_embedding(embedder)` puts any of them behind llama-index's
`BaseEmbedding`, prefixes included, for `VectorStoreIndex` and `IngestionPipeline`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

from pipeline.errors import ConfigError, ModelUnavailable
from pipeline.settings import EMBEDDED_EMBED_MODEL

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from pipeline.models.e5_onnx import OnnxE5Encoder
    from pipeline.settings import Settings

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...
    def embed_query(self, text: str) -> np.ndarray: ...
    def count_tokens(self, text: str) -> int: ...


def _offline_env() -> None:
    # Nothing may reach a model hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def resolve_model_path(settings: "Settings") -> str:
    """The folder (or name) SentenceTransformer should load; builds the embedded model once."""
    if settings.embed_model == EMBEDDED_EMBED_MODEL:
        from pipeline.models.e5 import build_embedded_e5, embedded_e5_path

        return str(build_embedded_e5(embedded_e5_path(settings.cache_dir)))
    return settings.embed_model


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local path (or the offline HF cache)."""

    def __init__(self, settings: "Settings"):
        _offline_env()
        self.name = settings.embed_model
        self.query_prefix = settings.embed_query_prefix
        self.passage_prefix = settings.embed_passage_prefix
        self.batch_size = settings.embed_batch_size
        path = resolve_model_path(settings)
        try:
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()
            self.model = SentenceTransformer(path, device="cpu")
        except Exception as err:
            raise ModelUnavailable(
                f"埋め込みモデルを読み込めません: {path} ({err})\n"
                "ローカルにあるモデルのパスを設定 embed_model に指定してください。"
            ) from err
        self.dim = int(self.model.get_embedding_dimension())
        self._tokenizer = self.model.tokenizer
        self.freeze_query_graph = settings.freeze_query_graph
        self.query_path_reason: str | None = None  # why the embedded model is not on ONNX
        self._frozen = None
        self._queries = 0
        self._lock = threading.Lock()

    @property
    def query_path(self) -> str:
        """"frozen" once the graph is built and checked, else "direct"."""
        return "frozen" if self._frozen is not None else "direct"

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        from pipeline.index.query_encoder import FrozenQueryEncoder, encode_one

        with self._lock:
            self._queries += 1
            # A process asking its second question will likely ask more: pay the ~0.7 s build once.
            if self._queries == 2 and self.freeze_query_graph:
                self._frozen = FrozenQueryEncoder.build(self.model, self.query_prefix)
            frozen = self._frozen
        if frozen is not None:
            return frozen(self.query_prefix + text)
        return encode_one(self.model, self.query_prefix + text)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )


class HashEmbedder:
    """Character-bigram hashing into a fixed vector: no model, deterministic, for tests."""

    def __init__(self, dim: int = 256):
        self.name = f"hash-bigram-{dim}"
        self.dim = dim

    def count_tokens(self, text: str) -> int:
        return len(text)

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for a, b in zip(text, text[1:]):
            h = int.from_bytes(hashlib.blake2b((a + b).encode(), digest_size=4).digest(), "little")
            v[h % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)


class OnnxE5Embedder:
    """The embedded e5 through its checked ONNX export: the torch model's vectors (within 1e-4
    in cosine), for passages and questions alike, without importing torch."""

    query_path = "onnx"
    query_path_reason = None

    def __init__(self, settings: "Settings", encoder: "OnnxE5Encoder"):
        self.name = embedding_name(settings)
        self.query_prefix = settings.embed_query_prefix
        self.passage_prefix = settings.embed_passage_prefix
        self.batch_size = settings.embed_batch_size
        self.encoder = encoder
        self.dim = encoder.dim

    def count_tokens(self, text: str) -> int:
        return self.encoder.count_tokens(text)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode([self.passage_prefix + t for t in texts], self.batch_size)

    def embed_query(self, text: str) -> np.ndarray:
        return self.encoder.encode([self.query_prefix + text])[0]


def embedding_name(settings: "Settings") -> str:
    """What an index's vectors come from: the model, and its precision when not fp32 (int8
    vectors differ, so they never share an index or a cache with fp32 ones)."""
    if settings.embed_precision == "fp32":
        return settings.embed_model
    return f"{settings.embed_model}#{settings.embed_precision}"


def settings_for_index(settings: "Settings", built_with: str | None) -> "Settings":
    """The settings to embed questions for an index whose vectors came from `built_with`
    (`embedding_name` as its manifest records it): its precision, whatever the setting says
    now (a changed `embed_precision` applies when an index is built). Another model is an error."""
    if not built_with or built_with == embedding_name(settings):
        return settings
    model, _, precision = built_with.partition("#")
    if model != settings.embed_model:
        raise ConfigError(
            f"このインデックスは {built_with} の埋め込みで作られています (設定は {embedding_name(settings)})\n"
            "設定を戻すか、rag ingest で別の --index に作り直してください。"
        )
    return settings.model_copy(update={"embed_precision": precision or "fp32"})


def load_embedder(settings: "Settings") -> Embedder:
    if settings.embed_precision != "fp32" and settings.embed_model != EMBEDDED_EMBED_MODEL:
        raise ConfigError(
            f"embed_precision = {settings.embed_precision} は同梱の埋め込みモデル ({EMBEDDED_EMBED_MODEL}) "
            f"でだけ使えます (embed_model = {settings.embed_model})"
        )
    if settings.embed_model.startswith("hash:"):
        return HashEmbedder(int(settings.embed_model.split(":", 1)[1] or 256))
    if settings.embed_model == EMBEDDED_EMBED_MODEL:
        from pipeline.models.e5 import embedded_e5_path
        from pipeline.models.e5_onnx import ExportRefused, open_encoder

        try:
            return OnnxE5Embedder(settings, open_encoder(embedded_e5_path(settings.cache_dir), settings.embed_precision))
        except ExportRefused as err:
            if settings.embed_precision != "fp32":  # torch has no int8 graph: its vectors would not match
                raise ModelUnavailable(f"埋め込みモデルの {settings.embed_precision} 版を使えません: {err}") from err
            log.warning("埋め込みモデルは torch で動かします (ONNX を使えません: %s)", err)
            embedder = SentenceTransformerEmbedder(settings)
            embedder.query_path_reason = str(err)
            return embedder
    return SentenceTransformerEmbedder(settings)


# --------------------------------------------------------------------------
# llama-index adapter
# --------------------------------------------------------------------------


@functools.cache
def _embedding_adapter_class():
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr

    class EmbedderEmbedding(BaseEmbedding):
        """A `pipeline.index.embedder` Embedder behind llama-index's embedding interface."""

        _embedder: Any = PrivateAttr()

        def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
            kwargs.setdefault("model_name", embedder.name)
            super().__init__(**kwargs)
            self._embedder = embedder

        @classmethod
        def class_name(cls) -> str:
            return "rag_embedder"

        @property
        def embedder(self) -> Embedder:
            return self._embedder

        # The embedder adds e5's "query: " / "passage: " prefixes itself.
        def _get_query_embedding(self, query: str) -> list[float]:
            return self._embedder.embed_query(query).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._embedder.embed_passages([text])[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._embedder.embed_passages(texts).tolist()

    return EmbedderEmbedding


def as_llama_index_embedding(embedder: Embedder, **kwargs: Any) -> "BaseEmbedding":
    """`embedder` as a llama-index `BaseEmbedding`: queries through `embed_query`, node
    texts through `embed_passages`, so the vectors are the ones `rag ingest` stores.

        embed_model = as_llama_index_embedding(index.embedder)
        VectorStoreIndex.from_vector_store(store.vector_store, embed_model=embed_model)

    `kwargs` go to `BaseEmbedding` (e.g. `embed_batch_size`).
    """
    return _embedding_adapter_class()(embedder, **kwargs)
