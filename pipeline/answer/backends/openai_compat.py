"""The OpenAI-compatible backend: hosted APIs, vLLM, llama.cpp's server, LM Studio…

``POST {openai_base_url}/chat/completions`` (default; a ChatML prompt is sent as its
messages, a plain prompt as one user message) or ``/completions`` with the raw
prompt (`openai_endpoint = "completions"`, for servers whose model uses ChatML).
Servers cache stable prompt prefixes themselves (vLLM prefix caching, OpenAI's
automatic caching); ``usage.prompt_tokens_details.cached_tokens`` is reported as
`Completion.cached_prompt_tokens`.

Settings read: `openai_base_url`, `openai_model` (unset: the first model of
``GET /models``), `openai_api_key` (unset: $OPENAI_API_KEY), `openai_endpoint`,
`openai_context`, `price_in_per_mtok` / `price_out_per_mtok`, `llm_timeout_s`,
`llm_connect_timeout_s`, `llm_prompt_tokens_per_s` / `llm_gen_tokens_per_s` (unset: the
estimates below), `llm_prefix_cache`.
"""

from __future__ import annotations

import os
import time
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
from pipeline.errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = ["OpenAICompatBackend"]

# Until the router has better numbers (a server's speed is not measured here).
DEFAULT_PROMPT_TOKENS_PER_S = 2000.0
DEFAULT_GEN_TOKENS_PER_S = 50.0


class OpenAICompatBackend:
    name = "openai"

    def __init__(
        self,
        settings: "Settings | None" = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """`settings` None: loaded from rag.toml and the environment."""
        if settings is None:
            from pipeline.settings import load_settings

            settings = load_settings()
        self.base_url = (base_url or settings.openai_base_url).rstrip("/")
        self.model = model or settings.openai_model
        self.endpoint = settings.openai_endpoint  # "chat" | "completions", checked by Settings
        key = api_key or settings.openai_api_key or os.environ.get("OPENAI_API_KEY")
        if hasattr(key, "get_secret_value"):
            key = key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = make_client(settings, self.base_url, headers)
        self.hint = (
            "サーバー (vLLM、llama.cpp server など) が起動しているか、URL が正しいか確かめてください。\n"
            "URL は設定 openai_base_url (環境変数 RAG_OPENAI_BASE_URL)、モデルは openai_model で変えられます。"
            "サーバーなしで使うには llm_backend=embedded にしてください。"
        )
        self.status_hints = {
            401: "API キーが拒否されました: 設定 openai_api_key か環境変数 OPENAI_API_KEY を確かめてください。",
            403: "API キーにこの操作の権限がありません: openai_api_key を確かめてください。",
            404: f"URL かモデル名が違います: openai_base_url={self.base_url}、openai_model={self.model!r}。",
            429: "利用上限に達しました (rate limit)。時間をおいて再実行してください。",
        }
        self.info = BackendInfo(
            name=self.name,
            context_window=settings.openai_context,
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
        """Estimated: the API has no tokenizer endpoint."""
        return estimate_tokens(text)

    def _model(self) -> str:
        """`openai_model`, else the first model the server lists (vLLM, llama.cpp server)."""
        if self.model:
            return self.model
        data = request_json(self.client, "GET", "/models", backend=self.name, hint=self.hint)
        models = data.get("data") or []
        if not models or not isinstance(models[0], dict) or "id" not in models[0]:
            raise ConfigError(
                f"openai_model が未設定で、{self.base_url}/models からもモデルが分かりません。"
                "設定 openai_model を指定してください。"
            )
        self.model = str(models[0]["id"])
        return self.model

    def check(self) -> None:
        """Raise BackendUnavailable unless the server answers (``GET /models``)."""
        request_json(self.client, "GET", "/models", backend=self.name, hint=self.hint)

    def _body(self, prompt: str, max_tokens: int, stop: list[str] | None) -> tuple[str, dict]:
        body: dict[str, Any] = {"model": self._model(), "max_tokens": max_tokens, "temperature": 0}
        if stop:
            body["stop"] = list(stop)[:4]  # OpenAI accepts at most 4
        if self.endpoint == "completions":
            body["prompt"] = prompt
            return "/completions", body
        body["messages"] = parse_chat(prompt) or [{"role": "user", "content": prompt}]
        return "/chat/completions", body

    def _post(self, path: str, body: dict) -> dict:
        return post_json(
            self.client, path, body, backend=self.name, hint=self.hint, status_hints=self.status_hints
        )

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 512,
        stop: list[str] | None = None,
        prefix_cache_key: str | None = None,
    ) -> Completion:
        """One non-streamed completion at temperature 0."""
        t0 = time.perf_counter()
        path, body = self._body(prompt, max_tokens, stop)
        data = self._post(path, body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if path == "/chat/completions" else choice["text"]
        except (KeyError, IndexError, TypeError) as err:
            raise malformed(self.name, self.base_url + path, data) from err
        text, _ = apply_stop(text or "", stop)
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or estimate_tokens(prompt)),
            completion_tokens=int(usage.get("completion_tokens") or estimate_tokens(text)),
            seconds=time.perf_counter() - t0,
            prompt_seconds=None,
            cached_prompt_tokens=int(details.get("cached_tokens") or 0),
            backend=self.name,
        )

    def prob_yes(self, prompt: str) -> float:
        """From the first token's ``top_logprobs`` (20); NotImplementedError when the
        server returns no log-probabilities."""
        path, body = self._body(prompt, 1, None)
        if path == "/chat/completions":
            body.update(logprobs=True, top_logprobs=20)
        else:
            body["logprobs"] = 20
        try:
            data = self._post(path, body)
        except BackendUnavailable as err:
            if "HTTP 400" in str(err):
                raise NotImplementedError(f"{self.base_url} は logprobs に対応していません: {err}") from err
            raise
        try:
            logprobs = data["choices"][0].get("logprobs")
            if path == "/chat/completions":
                first = logprobs["content"][0]
                pairs = [(c["token"], c["logprob"]) for c in first.get("top_logprobs") or [first]]
            else:
                pairs = list(logprobs["top_logprobs"][0].items())
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise NotImplementedError(f"{self.base_url} が logprobs を返しません。") from err
        return yes_share_from_logprobs(pairs)
