"""The extractive backend: no LLM at all, answers are source sentences quoted verbatim.

For machines where no model can run, and as the floor the other backends are
compared with. `extractive_answer` picks the 1–3 sentences whose content lemmas
overlap the question's most, and cites each with its source number. Each answer
sentence is then a verbatim copy of its cited span, so the citation checker accepts
it by construction.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from pipeline.answer.backends.base import BackendInfo, Completion, estimate_tokens

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = ["EXTRACTIVE_LABEL", "ExtractiveBackend", "extractive_answer"]

EXTRACTIVE_LABEL = "(抽出モード: LLM を使わず資料の文をそのまま引用しています)"
NOT_FOUND = "資料からは分かりません。"
MIN_SENTENCE_CHARS = 6  # headings such as 「# Ollama」 are not answers


def extractive_answer(
    question: str,
    sources: Sequence[tuple[int, str]],
    analyzer: Any,
    *,
    max_sentences: int = 3,
) -> str:
    """The label line, then up to `max_sentences` source sentences, each followed by its ``[n]``.

    `sources` are ``(number, text)`` pairs; `analyzer` has ``content_lemmas(text)``
    (`pipeline.japanese.default_analyzer()`). Sentences are ranked by how many of
    the question's content lemmas they contain, then by the share of their own
    lemmas that match (shorter, denser sentences first), then by position. A
    sentence is kept if it matches at least half as many lemmas as the best one.
    The chosen sentences are printed in source order; repeated sentences (chunk
    overlap) once. Without any overlap the answer is 「資料からは分かりません。」.

        >>> from pipeline.japanese import default_analyzer
        >>> print(extractive_answer("Ollamaの既定のポートは?", [(1, "Ollamaの既定のポートは11434です。")], default_analyzer()))
        (抽出モード: LLM を使わず資料の文をそのまま引用しています)
        Ollamaの既定のポートは11434です。[1]
    """
    from pipeline.japanese import split_sentences

    wanted = set(analyzer.content_lemmas(question))
    seen: set[str] = set()
    scored: list[tuple[tuple, int, int, str]] = []  # (rank key, source order, position, sentence)
    for order, (number, text) in enumerate(sources):
        for start, end in split_sentences(text):
            sentence = text[start:end].strip()
            if len(sentence) < MIN_SENTENCE_CHARS or sentence in seen:
                continue
            seen.add(sentence)
            lemmas = set(analyzer.content_lemmas(sentence))
            overlap = len(wanted & lemmas)
            if overlap == 0:
                continue
            density = overlap / math.sqrt(len(lemmas))
            scored.append(((-overlap, -density, order, start), number, order, sentence))
    if not scored:
        return f"{EXTRACTIVE_LABEL}\n{NOT_FOUND}"
    scored.sort(key=lambda s: s[0])
    best = -scored[0][0][0]
    chosen = [s for s in scored[:max_sentences] if -s[0][0] * 2 >= best]
    chosen.sort(key=lambda s: (s[2], s[0][3]))
    lines = [f"{sentence}[{number}]" for _, number, _, sentence in chosen]
    return "\n".join([EXTRACTIVE_LABEL, *lines])


class ExtractiveBackend:
    """No model: `generative` is False and the engine calls `extractive_answer` instead
    of `complete`. Token counts are estimates; reading costs nothing."""

    name = "extractive"

    def __init__(self, settings: "Settings | None" = None, analyzer: Any = None) -> None:
        """`settings` None: loaded from rag.toml and the environment (only `llm_context` is read)."""
        if settings is None:
            from pipeline.settings import load_settings

            settings = load_settings()
        self._analyzer = analyzer
        self.info = BackendInfo(
            name=self.name,
            context_window=settings.llm_context,
            token_count_estimated=True,
            price_in_per_mtok=0.0,
            price_out_per_mtok=0.0,
            prompt_tokens_per_s=1e6,
            gen_tokens_per_s=1e6,
            speed_measured=False,
            supports_prefix_cache=False,
            generative=False,
        )

    @property
    def analyzer(self):
        if self._analyzer is None:
            from pipeline.japanese import default_analyzer

            self._analyzer = default_analyzer()
        return self._analyzer

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def answer(self, question: str, sources: Sequence[tuple[int, str]]) -> str:
        return extractive_answer(question, sources, self.analyzer)

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 512,
        stop: list[str] | None = None,
        prefix_cache_key: str | None = None,
    ) -> Completion:
        raise NotImplementedError(
            "extractive バックエンドは文章を生成しません: extractive_answer(question, sources, analyzer) を使ってください。"
        )

    def prob_yes(self, prompt: str) -> float:
        raise NotImplementedError("extractive バックエンドには LLM がありません。")
