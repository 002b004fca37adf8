"""Token counts without a tokenizer: the estimate every layer uses to budget prompts and chunks."""

from __future__ import annotations

import re
from collections import Counter

_CHAR_CLASSES = re.compile(
    r"(?P<kanji>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff々〆ヶ])"
    r"|(?P<kana>[\u3040-\u30ff\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65])"
    r"|(?P<digit>[0-9\uff10-\uff19])"
    r"|(?P<word>[A-Za-z\uff21-\uff3a\uff41-\uff5a]+)"
    r"|(?P<space>\s+)"
    r"|(?P<sym>[\x00-\x7f])"
    r"|(?P<other>.)",
    re.S,
)

# Tokens per unit, calibrated against the Qwen2.5 tokenizer by non-negative least
# squares (`benchmarks/token_estimate.py` refits and prints this): ASCII first, on the
# ASCII lines of the project's English docs (14 slices of 1,500 chars); then Japanese
# with the ASCII figures fixed, on 290 slices of JSQuAD / JaQuAD Wikipedia articles,
# JEMHopQA fact cards and the demo notes. Digits count 1 each (Qwen splits numbers).
# Japanese: kanji 0.88, kana and Japanese punctuation 0.65 token per char (Japanese
# prose overall 0.73 token/char); ASCII: ≈ 1.3 token per word with its space, 0.73
# per symbol. Error (estimate − real) / real per 1,500-char slice: Wikipedia mean
# −1 … +2 %, 5th–95th percentile −7 % … +10 %, worst +22 %; demo notes mean −3 %
# (−10 % … +4 %, worst −11 %); English prose mean −1 % (worst −18 %); very short
# fact cards (≈ 20–40 chars) run low: mean −6 %, worst −33 %.
TOKENS_PER_UNIT = {
    "kanji": 0.88,
    "kana": 0.65,  # and Japanese punctuation, full-width symbols
    "digit": 1.0,
    "word": 0.24,  # a run of Latin letters (with the space before it ≈ 1.3 token a word)
    "space": 1.05,  # a run of whitespace
    "sym": 0.73,  # ASCII punctuation
    "other": 2.27,  # emoji and other non-Japanese, non-ASCII characters
}


def estimate_tokens(text: str) -> int:
    """Qwen2.5 tokens of `text`, estimated from character classes (no tokenizer).

        >>> estimate_tokens("")
        0
        >>> 20 <= estimate_tokens("検索拡張生成は、検索した文書を根拠にして回答する手法です。") <= 30
        True
    """
    if not text:
        return 0
    counts = Counter(m.lastgroup for m in _CHAR_CLASSES.finditer(text))
    return max(1, round(sum(TOKENS_PER_UNIT[k] * n for k, n in counts.items())))


# The answer prompt around its sources — rules, format example, ChatML turn markers and
# the 「根拠:」 prefill — with an empty question, by `estimate_tokens`. Layers below
# `answer/` (`rag status`) cannot build that prompt; the answering engine counts it with
# its backend's tokenizer, and tests/test_engine.py fails when the prompt changes and this
# figure does not.
ANSWER_TEMPLATE_TOKENS = 312
# A question's allowance where the question is not known yet: the 95th percentile of the
# JSQuAD, JaQuAD and JEMHopQA dev questions is 36–43 tokens by `estimate_tokens` (mean ≈ 22).
QUESTION_TOKENS = 40


def usable_window(context_window: int, *, prompt_tokens: int, answer_tokens: int) -> int:
    """Tokens left for the sources once the prompt around them and the answer are reserved.

        >>> usable_window(32768, prompt_tokens=352, answer_tokens=256)
        32160
    """
    return context_window - prompt_tokens - answer_tokens
