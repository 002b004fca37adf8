"""The LLM backend interface, a fake for tests, and what every backend shares.

A backend is one small object (`LLMBackend`): `info` (window, speeds, prices),
`count_tokens`, `complete(prompt) -> Completion` and `prob_yes(prompt)` for yes/no
judge prompts. Prompts are plain strings; a backend with a chat template of its own
exposes `format_chat(system, user)` and the caller builds the raw prompt with it
(the embedded Qwen model). HTTP chat backends turn a ChatML prompt back into
messages (`parse_chat`), so the same prompt works everywhere.

`FakeBackend(handler)` answers with `handler(prompt)`, as httpx's `MockTransport`
does for requests. `as_llama_index_llm(backend)` puts any backend behind
llama-index's `LLM` interface.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

from pipeline.tokens import estimate_tokens

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core.llms import CustomLLM

__all__ = [
    "DEFAULT_GEN_TOKENS_PER_S",
    "DEFAULT_PROMPT_TOKENS_PER_S",
    "NO_WORDS",
    "YES_WORDS",
    "BackendInfo",
    "Completion",
    "FakeBackend",
    "LLMBackend",
    "apply_stop",
    "as_llama_index_llm",
    "estimate_tokens",
    "format_chat",
    "parse_chat",
    "yes_share",
    "yes_share_from_logprobs",
]

# Embedded Qwen2.5-1.5B Q4_K_M, 2 threads, measured once (ARCHITECTURE.md).
DEFAULT_PROMPT_TOKENS_PER_S = 52.0
DEFAULT_GEN_TOKENS_PER_S = 12.0

# First words of a yes / no answer to a judge prompt (prob_yes).
YES_WORDS = ("はい", "Yes", "yes", "YES")
NO_WORDS = ("いいえ", "No", "no", "NO")


@dataclass(frozen=True)
class Completion:
    """One completion. `seconds` is wall time of the call; `prompt_seconds` the time to
    the first generated token (reading the prompt), where the backend can tell;
    `cached_prompt_tokens` the prompt tokens that were not read again (KV cache)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    prompt_seconds: float | None = None
    cached_prompt_tokens: int = 0
    backend: str = ""


@dataclass(frozen=True)
class BackendInfo:
    """What the router needs to know about a backend."""

    name: str
    context_window: int
    token_count_estimated: bool  # count_tokens() is estimate_tokens(), not the real tokenizer
    price_in_per_mtok: float
    price_out_per_mtok: float
    prompt_tokens_per_s: float
    gen_tokens_per_s: float
    speed_measured: bool  # False: the speeds are defaults, not measured here
    supports_prefix_cache: bool
    generative: bool  # False for the extractive (no-LLM) backend


@runtime_checkable
class LLMBackend(Protocol):
    info: BackendInfo

    def count_tokens(self, text: str) -> int:
        """Tokens of `text`: the backend's own tokenizer where it has one, else `estimate_tokens`."""
        ...

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 512,
        stop: list[str] | None = None,
        prefix_cache_key: str | None = None,
    ) -> Completion:
        """Greedy completion of the raw `prompt`."""
        ...

    def prob_yes(self, prompt: str) -> float:
        """P(はい) / (P(はい) + P(いいえ)) for the next token; NotImplementedError where impossible."""
        ...


# --------------------------------------------------------------------------
# ChatML (Qwen2.5's chat format)
# --------------------------------------------------------------------------

_SPECIAL = re.compile(r"<\|([A-Za-z0-9_]+)\|>")
_TURN = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)(?:<\|im_end\|>\n?|$)", re.S)


def _defuse(text: str) -> str:
    """Break special-token spellings inside message text (a note quoting ``<|im_end|>``
    must not end the turn): ``<|im_end|>`` becomes ``< |im_end| >``."""
    return _SPECIAL.sub(lambda m: f"< |{m.group(1)}| >", text)


def format_chat(system: str, user: str) -> str:
    """A raw ChatML prompt that ends where the assistant's answer starts.

        >>> format_chat("短く答える。", "質問")
        '<|im_start|>system\\n短く答える。<|im_end|>\\n<|im_start|>user\\n質問<|im_end|>\\n<|im_start|>assistant\\n'

    Special-token spellings inside `system` / `user` are defused. Text appended after
    the returned string prefills the assistant's answer.
    """
    return chatml(([("system", system)] if system else []) + [("user", user)])


def chatml(turns: Sequence[tuple[str, str]]) -> str:
    """`(role, text)` turns as ChatML, ending where the assistant's answer starts.

    Roles other than system / user / assistant are sent as user; text is defused.
    """
    out = []
    for role, text in turns:
        role = role if role in ("system", "user", "assistant") else "user"
        out.append(f"<|im_start|>{role}\n{_defuse(text)}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def parse_chat(prompt: str) -> list[dict[str, str]] | None:
    """Messages of a ChatML prompt (`format_chat` output), or None for a plain prompt.

    The final, open assistant turn is dropped when empty and kept as an assistant
    message (a prefill) when not.
    """
    if not prompt.lstrip().startswith("<|im_start|>"):
        return None
    messages = [{"role": m.group(1), "content": m.group(2)} for m in _TURN.finditer(prompt)]
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages or None


# --------------------------------------------------------------------------
# Small helpers every backend uses
# --------------------------------------------------------------------------


def apply_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """`text` cut before the first stop string, and whether one was found.

    Stops are looked for after any leading whitespace: a model that opens its answer
    with a line break has not finished it (the short style stops at the line's end).
    """
    cut = len(text)
    lead = len(text) - len(text.lstrip())
    for s in stop or ():
        if s and (i := text.find(s, lead)) >= 0:
            cut = min(cut, i)
    return text[:cut], cut < len(text)


def yes_share(p_yes: float, p_no: float) -> float:
    """P(yes) / (P(yes) + P(no)), 0.5 when neither has any mass."""
    total = p_yes + p_no
    return 0.5 if total <= 0.0 or math.isnan(total) else p_yes / total


def yes_share_from_logprobs(pairs) -> float:
    """yes_share over (token text, logprob) pairs: a token counts for yes (no) when it
    is a prefix of a yes (no) word or starts with one (``は`` for はい, `` Yes``)."""
    p_yes = p_no = 0.0
    for token, logprob in pairs:
        if not isinstance(logprob, (int, float)):
            continue
        t = token.strip()
        if not t:
            continue
        p = math.exp(logprob)
        is_yes = any(w.startswith(t) or t.startswith(w) for w in YES_WORDS)
        is_no = any(w.startswith(t) or t.startswith(w) for w in NO_WORDS)
        if is_yes and not is_no:
            p_yes += p
        elif is_no and not is_yes:
            p_no += p
    return yes_share(p_yes, p_no)


def _starts_with_any(text: str, words: tuple[str, ...]) -> bool:
    t = text.strip().lstrip("「『\"'")
    return any(t.startswith(w) for w in words)


# --------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------

FAKE_INFO = BackendInfo(
    name="fake",
    context_window=32768,
    token_count_estimated=True,
    price_in_per_mtok=0.0,
    price_out_per_mtok=0.0,
    prompt_tokens_per_s=DEFAULT_PROMPT_TOKENS_PER_S,
    gen_tokens_per_s=DEFAULT_GEN_TOKENS_PER_S,
    speed_measured=False,
    supports_prefix_cache=False,
    generative=True,
)


@dataclass
class FakeBackend:
    """A backend that answers `handler(prompt)`; records every prompt in `prompts`.

    `complete` applies `stop` to the handler's text; tokens are `estimate_tokens`.
    `prob_yes` reads the handler's answer: a number in [0, 1] is returned as is,
    「はい」/"yes" gives 1.0, 「いいえ」/"no" 0.0, anything else 0.5.

        >>> fake = FakeBackend(lambda prompt: "はい。[1]")
        >>> fake.complete("質問").text
        'はい。[1]'
        >>> fake.prob_yes("支持しますか?")
        1.0
    """

    handler: Callable[[str], str]
    info: BackendInfo = field(default=FAKE_INFO)
    prompts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.info is None:
            self.info = FAKE_INFO

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 512,
        stop: list[str] | None = None,
        prefix_cache_key: str | None = None,
    ) -> Completion:
        t0 = time.perf_counter()
        self.prompts.append(prompt)
        text, _ = apply_stop(self.handler(prompt), stop)
        seconds = time.perf_counter() - t0
        return Completion(
            text=text,
            prompt_tokens=estimate_tokens(prompt),
            completion_tokens=estimate_tokens(text),
            seconds=seconds,
            prompt_seconds=seconds,
            backend=self.info.name,
        )

    def prob_yes(self, prompt: str) -> float:
        self.prompts.append(prompt)
        answer = self.handler(prompt)
        try:
            value = float(answer.strip())
        except ValueError:
            pass
        else:
            if 0.0 <= value <= 1.0:
                return value
        if _starts_with_any(answer, YES_WORDS):
            return 1.0
        if _starts_with_any(answer, NO_WORDS):
            return 0.0
        return 0.5


# --------------------------------------------------------------------------
# llama-index adapter
# --------------------------------------------------------------------------


def _chatml_messages_to_prompt(messages) -> str:
    """llama-index ChatMessages to a ChatML prompt ending at the assistant's turn."""
    return chatml([(getattr(m.role, "value", str(m.role)), m.content or "") for m in messages])


@functools.cache
def _adapter_class():
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    class BackendLLM(CustomLLM):
        """A `pipeline.answer.backends` backend behind llama-index's LLM interface."""

        max_tokens: int = Field(default=512, description="Default max_tokens per completion.")
        _backend: Any = PrivateAttr()

        def __init__(self, backend: LLMBackend, **kwargs: Any) -> None:
            kwargs.setdefault("messages_to_prompt", _chatml_messages_to_prompt)
            super().__init__(**kwargs)
            self._backend = backend

        @classmethod
        def class_name(cls) -> str:
            return "rag_backend_llm"

        @property
        def backend(self) -> LLMBackend:
            return self._backend

        @property
        def metadata(self) -> LLMMetadata:
            info = self._backend.info
            return LLMMetadata(
                context_window=info.context_window,
                num_output=self.max_tokens,
                is_chat_model=False,
                model_name=info.name,
            )

        def _prompt(self, prompt: str, formatted: bool) -> str:
            fmt = getattr(self._backend, "format_chat", None)
            if formatted or fmt is None:
                return prompt
            return fmt(self.system_prompt or "", prompt)

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            c = self._backend.complete(
                self._prompt(prompt, formatted),
                max_tokens=kwargs.get("max_tokens", self.max_tokens),
                stop=kwargs.get("stop"),
            )
            return CompletionResponse(text=c.text, raw={"completion": c})

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
            response = self.complete(prompt, formatted=formatted, **kwargs)
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

    return BackendLLM


def as_llama_index_llm(backend: LLMBackend, *, max_tokens: int = 512) -> "CustomLLM":
    """`backend` as a llama-index `CustomLLM` (complete, chat, stream, async).

    Chat messages become a ChatML prompt; a plain completion prompt is wrapped with
    the backend's `format_chat` when it has one. Non-streaming underneath: streaming
    yields the whole answer once.
    """
    return _adapter_class()(backend, max_tokens=max_tokens)
