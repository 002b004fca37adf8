"""What the entailment model reads: a short premise window and the token ids of a pair.

Cost grows with length (attention is quadratic, the rest linear), and a claim sentence is
decided by the one or two source sentences that say the same thing, so the premise is
cut to a window: the source sentence that shares the most character bigrams with the
claim, then its neighbours (before, after, alternately) while they fit in `max_chars`.
Training and the runtime cut premises the same way.

A pair is encoded XLM-R style, ``<s> premise </s></s> hypothesis </s>``; the hypothesis is
kept whole up to `max_hypothesis` tokens and the premise is cut to what is left of
`max_length`.
"""

from __future__ import annotations

from typing import Sequence

from pipeline.japanese import split_sentences

BOS, EOS, PAD = 0, 2, 1  # XLM-R ids: <s>, </s>, <pad> (the e5 tokenizer's)


def _bigrams(text: str) -> set[str]:
    t = "".join(text.split())
    return {t[i : i + 2] for i in range(len(t) - 1)}


def premise_window(text: str, hypothesis: str, max_chars: int = 160) -> str:
    """The part of `text` (at most `max_chars` characters) that best matches `hypothesis`."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    spans = split_sentences(text) or [(0, len(text))]
    want = _bigrams(hypothesis)
    scores = [len(want & _bigrams(text[s:e])) for s, e in spans]
    best = max(range(len(spans)), key=lambda i: (scores[i], -i))
    s, e = spans[best]
    if e - s > max_chars:
        return _cut_long(text[s:e], want, max_chars)
    lo, hi = best, best
    while True:
        grown = False
        for j in (lo - 1, hi + 1):  # the sentence before first: a claim often rests on its lead-in
            if 0 <= j < len(spans):
                ns, ne = min(s, spans[j][0]), max(e, spans[j][1])
                if ne - ns <= max_chars:
                    s, e = ns, ne
                    lo, hi = min(lo, j), max(hi, j)
                    grown = True
        if not grown:
            return text[s:e]


def _cut_long(sentence: str, want: set[str], max_chars: int) -> str:
    """A `max_chars` slice of an over-long sentence around its matching bigrams."""
    hits = [i for i in range(len(sentence) - 1) if sentence[i : i + 2] in want]
    centre = hits[len(hits) // 2] if hits else 0
    start = max(0, min(centre - max_chars // 2, len(sentence) - max_chars))
    return sentence[start : start + max_chars]


def with_title(title: str, premise: str) -> str:
    """The premise as the checker sees a cited chunk: its title line first (when not already there)."""
    title = title.strip()
    if not title or premise.startswith(title):
        return premise
    return f"{title}\n{premise}"


def passage_text(title: str, text: str, query: str, max_chars: int) -> str:
    """What the reranker reads of a chunk: its title line and the window best matching `query`."""
    return with_title(title, premise_window(text, query, max_chars))


def pair_ids(tokenizer, premises: Sequence[str], hypotheses: Sequence[str], max_length: int,
             max_hypothesis: int) -> list[list[int]]:
    """Token ids of each (premise, hypothesis) pair, at most `max_length` ids each.

    `tokenizer` is a `tokenizers.Tokenizer` (the e5 folder's tokenizer.json).
    """
    if len(premises) != len(hypotheses):
        raise ValueError("premises and hypotheses differ in length")
    p_ids = [e.ids for e in tokenizer.encode_batch(list(premises), add_special_tokens=False)]
    h_ids = [e.ids for e in tokenizer.encode_batch(list(hypotheses), add_special_tokens=False)]
    out = []
    for p, h in zip(p_ids, h_ids):
        h = h[:max_hypothesis]
        room = max(0, max_length - len(h) - 4)
        out.append([BOS, *p[:room], EOS, EOS, *h, EOS])
    return out


def padded(batch: Sequence[Sequence[int]]):
    """(ids, mask) tensors for a batch of id lists, right-padded with <pad>."""
    import torch

    n = max(len(x) for x in batch)
    ids = torch.full((len(batch), n), PAD, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return ids, mask


def length_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding), in length order.

    A batch holds at most `max_rows` rows and `max_tokens` padded tokens.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        # sorted ascending: the row being added is the batch's longest
        if cur and (len(cur) >= max_rows or lengths[i] * (len(cur) + 1) > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
