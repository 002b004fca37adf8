"""The Ollama backend: a local (or remote) Ollama server over its native HTTP API.

A ChatML prompt (`format_chat`) goes to ``/api/chat`` as messages, so Ollama applies
the model's own template; a plain prompt goes to ``/api/generate``
(``raw: true`` when `ollama_raw` is set: the prompt is sent as is, for Qwen models
and hand-built templates). Ollama keeps the KV state of the last prompt while the
model stays loaded (`ollama_keep_alive`), so a stable prefix is read once.

Settings read: `ollama_url`, `ollama_model`, `ollama_context` (sent as ``num_ctx``),
`ollama_raw`, `ollama_keep_alive`, `llm_timeout_s`, `llm_connect_timeout_s`,
`llm_prompt_tokens_per_s` / `llm_gen_tokens_per_s` (speeds until measured; unset: the
estimates below), `llm_prefix_cache`, `price_in_per_mtok` / `price_out_per_mtok`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pipeline.answer.backends._http import make_client, malformed, post_json, request_json
from pipeline.answer.backends.base import (
    BackendInfo,
    Completion,
    apply_stop,
    estimate_tokens,
    parse_chat,
    yes_share_from_logprobs,
)

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = ["OllamaBackend"]

# Until a response reports Ollama's own timings (then speed_measured=True).
DEFAULT_PROMPT_TOKENS_PER_S = 300.0
DEFAULT_GEN_TOKENS_PER_S = 20.0


class OllamaBackend:
    name = "ollama"

    def __init__(
        self, settings: "Settings | None" = None, *, url: str | None = None, model: str | None = None
    ) -> None:
        """`settings` None: loaded from rag.toml and the environment."""
        if settings is None:
            from pipeline.settings import load_settings

            settings = load_settings()
        self.url = (url or settings.ollama_url).rstrip("/")
        self.model = model or settings.ollama_model
        self.num_ctx = settings.ollama_context
        self.raw = settings.ollama_raw
        self.keep_alive = settings.ollama_keep_alive
        self.client = make_client(settings, self.url)
        self.hint = (
            f"Ollama が起動しているか確かめてください (`ollama serve`、モデルは `ollama pull {self.model}`)。\n"
            "URL は設定 ollama_url (環境変数 RAG_OLLAMA_URL) で変えられます。"
            "サーバーなしで使うには llm_backend=embedded にしてください。"
        )
        self.status_hints = {
            404: f"モデル {self.model!r} が Ollama にありません: `ollama pull {self.model}` を実行するか、"
            "設定 ollama_model を変えてください。"
        }
        self.info = BackendInfo(
            name=self.name,
            context_window=self.num_ctx,
            token_count_estimated=True,
            price_in_per_mtok=settings.price_in_per_mtok,
            price_out_per_mtok=settings.price_out_per_mtok,
            prompt_tokens_per_s=settings.llm_prompt_tokens_per_s or DEFAULT_PROMPT_TOKENS_PER_S,
            gen_tokens_per_s=settings.llm_gen_tokens_per_s or DEFAULT_GEN_TOKENS_PER_S,
            speed_measured=False,
            supports_prefix_cache=settings.llm_prefix_cache,
            generative=True,
        )

    def count_tokens(self, text: str) -> int:
        """Estimated (Ollama's API has no tokenizer endpoint)."""
        return estimate_tokens(text)

    def check(self) -> None:
        """Raise BackendUnavailable unless the server answers (``GET /api/tags``)."""
        request_json(self.client, "GET", "/api/tags", backend=self.name, hint=self.hint)

    def _request(self, prompt: str, options: dict, **extra: Any) -> tuple[str, dict]:
        messages = None if self.raw else parse_chat(prompt)
        body: dict[str, Any] = {
            "model": self.model,
            "stream": False,
            "keep_alive": self.keep_alive,
            "options": {"temperature": 0, "num_ctx": self.num_ctx, **options},
            **extra,
        }
        if messages is not None:
            path = "/api/chat"
            body["messages"] = messages
        else:
            path = "/api/generate"
            body["prompt"] = prompt
            body["raw"] = self.raw
        data = post_json(
            self.client, path, body, backend=self.name, hint=self.hint, status_hints=self.status_hints
        )
        if "error" in data:
            raise malformed(self.name, self.url + path, data)
        return path, data

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 512,
        stop: list[str] | None = None,
        prefix_cache_key: str | None = None,
    ) -> Completion:
        """One non-streamed completion at temperature 0. `prefix_cache_key` is not needed:
        Ollama reuses the previous prompt's KV state by itself."""
        t0 = time.perf_counter()
        options: dict[str, Any] = {"num_predict": max_tokens}
        if stop:
            options["stop"] = list(stop)
        path, data = self._request(prompt, options)
        if path == "/api/chat":
            text = (data.get("message") or {}).get("content")
        else:
            text = data.get("response")
        if not isinstance(text, str):
            raise malformed(self.name, self.url + path, data)
        text, _ = apply_stop(text, stop)
        seconds = time.perf_counter() - t0
        prompt_tokens = int(data.get("prompt_eval_count") or estimate_tokens(prompt))
        completion_tokens = int(data.get("eval_count") or estimate_tokens(text))
        prompt_ns = data.get("prompt_eval_duration")
        eval_ns = data.get("eval_duration")
        self._learn_speed(prompt_tokens, prompt_ns, completion_tokens, eval_ns)
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            seconds=seconds,
            prompt_seconds=prompt_ns / 1e9 if isinstance(prompt_ns, (int, float)) else None,
            backend=self.name,
        )

    def _learn_speed(self, n_prompt: int, prompt_ns, n_gen: int, gen_ns) -> None:
        """Ollama reports its own timings: use them for `info` (prompts ≥ 64 tokens)."""
        if not (isinstance(prompt_ns, (int, float)) and isinstance(gen_ns, (int, float))):
            return
        if n_prompt < 64 or n_gen < 4 or prompt_ns <= 0 or gen_ns <= 0:
            return
        self.info = replace(
            self.info,
            prompt_tokens_per_s=round(n_prompt / (prompt_ns / 1e9), 1),
            gen_tokens_per_s=round(n_gen / (gen_ns / 1e9), 1),
            speed_measured=True,
        )

    def prob_yes(self, prompt: str) -> float:
        """From the first token's top log-probabilities (Ollama ≥ 0.12.11 returns
        ``logprobs``); NotImplementedError when the server returns none."""
        path, data = self._request(prompt, {"num_predict": 1}, logprobs=True, top_logprobs=20)
        entries = data.get("logprobs")
        if not entries:
            raise NotImplementedError(
                f"Ollama ({self.url}) が logprobs を返しません: Ollama 0.12.11 以降が必要です。"
            )
        first = entries[0]
        candidates = list(first.get("top_logprobs") or []) or [first]
        return yes_share_from_logprobs(
            (c.get("token", ""), c.get("logprob")) for c in candidates
        )

