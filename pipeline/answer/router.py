"""The router: retrieve chunks, or pack the whole corpus into a long-context window.

A pure function of measured facts — token counts, the backend's window, speed and
price, the budgets, the question and retrieval confidence — that returns its choice
with the reasons. Self-Route's fallback (retry with long context when the retrieve
answer says the sources don't say) is decided by `allow_fallback`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pipeline.tokens import usable_window

Mode = Literal["retrieve", "long-context", "top-documents"]

# Questions about the whole collection favour packing everything.
GLOBAL_PATTERNS = (
    "まとめ", "すべて", "全て", "全部", "一覧", "列挙", "比較", "比べ", "違い", "いくつ", "何個",
    "何種類", "どれだけ", "全体", "概要", "共通", "挙げ", "傾向",
)
_GLOBAL_RE = re.compile("|".join(map(re.escape, GLOBAL_PATTERNS)))

# A corpus at most this many times the retrieved chunks is read whole: retrieval would
# leave out little, and reading it all costs about as much.
WHOLE_CORPUS_RATIO = 1.5


def is_global_question(question: str) -> bool:
    return bool(_GLOBAL_RE.search(question))


@dataclass(frozen=True)
class RouteInputs:
    question: str
    corpus_tokens: int  # all indexed document text, measured with the backend's tokenizer
    retrieve_tokens: int  # the top-k chunks that retrieve mode would send
    window: int  # backend context window
    prompt_tokens: int  # the prompt around the sources: instructions, format example, question
    answer_tokens: int  # reserved for the answer
    prompt_tokens_per_s: float
    gen_tokens_per_s: float
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    prefix_cached: bool = False  # the packed corpus's KV state is ready (or the server caches prefixes)
    prefix_preparable: bool = False  # the backend saves prefix states, which `rag ingest` prepares
    # What the question itself adds after a cached prefix (None: the whole prompt is counted).
    question_tokens: int | None = None
    # Retrieve mode's own prompt and answer budget where they differ (short answers over evidence).
    retrieve_prompt_tokens: int | None = None
    retrieve_answer_tokens: int | None = None
    # The retrieved chunks whole, where retrieve mode reads less of them (None: retrieve_tokens).
    retrieved_chunk_tokens: int | None = None
    # Retrieve first even when the retrievers disagree, long context only if the answer is
    # 「分かりません」 (Self-Route): what the short answer path measured on corpora that fit
    # (benchmarks/results/answers.md: retrieve 10/10, long context 5/10, 1.5B model).
    retrieve_first: bool = False
    latency_budget_s: float = 120.0
    cost_budget: float = 0.05  # money per question, in the price unit
    retrieval_confidence: float = 1.0  # 0..1; low when the retrievers disagree or scores are flat
    confidence_threshold: float = 0.35
    token_count_estimated: bool = False


@dataclass(frozen=True)
class Estimate:
    input_tokens: int  # tokens read fresh (not from a cache)
    seconds: float
    cost: float

    def to_dict(self) -> dict:
        return {"input_tokens": self.input_tokens, "seconds": self.seconds, "cost": self.cost}


@dataclass(frozen=True)
class Route:
    mode: Mode
    reasons: tuple[str, ...]
    usable_window: int
    corpus_tokens: int
    estimates: dict[str, Estimate] = field(default_factory=dict)
    allow_fallback: bool = False  # a retrieve answer of 「分かりません」 may retry with long context
    token_count_estimated: bool = False

    def to_dict(self) -> dict:
        """The JSON shape of `rag ask --json`'s "route"."""
        return {
            "mode": self.mode,
            "reasons": list(self.reasons),
            "usable_window": self.usable_window,
            "corpus_tokens": self.corpus_tokens,
            "estimates": {name: e.to_dict() for name, e in self.estimates.items()},
            "allow_fallback": self.allow_fallback,
            "token_count_estimated": self.token_count_estimated,
        }


def _estimate(inp: RouteInputs, read_tokens: int, answer_tokens: int | None = None) -> Estimate:
    answer_tokens = inp.answer_tokens if answer_tokens is None else answer_tokens
    seconds = read_tokens / max(inp.prompt_tokens_per_s, 1e-9) + answer_tokens / max(inp.gen_tokens_per_s, 1e-9)
    cost = (read_tokens * inp.price_in_per_mtok + answer_tokens * inp.price_out_per_mtok) / 1e6
    return Estimate(read_tokens, round(seconds, 2), round(cost, 6))


def decide(inp: RouteInputs) -> Route:
    usable = usable_window(inp.window, prompt_tokens=inp.prompt_tokens, answer_tokens=inp.answer_tokens)
    fits = inp.corpus_tokens <= usable
    retrieve_prompt = inp.prompt_tokens if inp.retrieve_prompt_tokens is None else inp.retrieve_prompt_tokens
    retrieve = _estimate(inp, retrieve_prompt + inp.retrieve_tokens, inp.retrieve_answer_tokens)
    # With a cached prefix (rules and corpus) only the question is read fresh.
    fresh = inp.prompt_tokens if inp.question_tokens is None else inp.question_tokens
    lc_read = fresh if inp.prefix_cached else inp.prompt_tokens + inp.corpus_tokens
    long_ctx = _estimate(inp, lc_read)
    estimates = {"retrieve": retrieve, "long-context": long_ctx}
    within_budget = long_ctx.seconds <= inp.latency_budget_s and long_ctx.cost <= inp.cost_budget
    reasons: list[str] = []
    est = "（推定）" if inp.token_count_estimated else ""
    reasons.append(
        f"コーパス {inp.corpus_tokens} トークン{est} / 使える窓 {usable} トークン "
        f"(窓 {inp.window} − 指示 {inp.prompt_tokens} − 回答 {inp.answer_tokens})"
    )

    def route(mode: Mode, why: str, fallback: bool = False) -> Route:
        return Route(mode, tuple(reasons + [why]), usable, inp.corpus_tokens, estimates,
                     fallback, inp.token_count_estimated)

    if not fits:
        if is_global_question(inp.question):
            return route("top-documents", "コーパスが窓に入らないため、全体を問う質問には関連の高い文書を丸ごと窓いっぱいまで詰める")
        return route("retrieve", "コーパスが窓に入らないため検索モード")
    budget_note = (
        f"長文脈の推定 {long_ctx.seconds:.1f} 秒・{long_ctx.cost:.4f} "
        f"(予算 {inp.latency_budget_s:.1f} 秒・{inp.cost_budget:.4f})"
        + ("、プレフィックスはキャッシュ済み" if inp.prefix_cached else "、プレフィックスは未キャッシュ")
        + ("（rag ingest で準備できます）" if not inp.prefix_cached and inp.prefix_preparable else "")
    )
    reasons.append(budget_note)
    if not within_budget:
        return route("retrieve", "長文脈は時間か費用の予算を超えるため検索モード")
    if is_global_question(inp.question):
        return route("long-context", "コーパス全体を問う質問 (まとめ・一覧・比較など) なので全体を読む")
    if inp.retrieval_confidence < inp.confidence_threshold and inp.retrieve_first:
        return route(
            "retrieve",
            f"検索の確信度は低い ({inp.retrieval_confidence:.2f}) が、このモデルは検索した根拠からの方が正確なので"
            "まず検索モード（答えが見つからなければ長文脈で再試行）",
            fallback=True,
        )
    if inp.retrieval_confidence < inp.confidence_threshold:
        return route(
            "long-context",
            f"検索の確信度が低い ({inp.retrieval_confidence:.2f} < {inp.confidence_threshold}) ので全体を読む",
        )
    retrieved = inp.retrieve_tokens if inp.retrieved_chunk_tokens is None else inp.retrieved_chunk_tokens
    if inp.corpus_tokens <= retrieved * WHOLE_CORPUS_RATIO:
        return route("long-context", "コーパスが検索結果とほぼ同じ大きさなので全体を読む")
    return route(
        "retrieve",
        f"的を絞った質問で検索の確信度も十分 ({inp.retrieval_confidence:.2f})、検索モード"
        "（答えが見つからなければ長文脈で再試行）",
        fallback=True,
    )
