"""Evidence selection: the few sentences of the retrieved chunks that a small model should read.

The embedded 1.5B model reads ≈ 50 prompt tokens a second on two cores, so five whole
chunks (≈ 1,900 tokens) cost ≈ 40 s before it writes a word, and most of what it reads
is beside the question. `select_evidence` keeps, from the retrieved chunks in their
ranking order, the sentences that share the most content lemmas with the question
(the same signal the extractive backend answers with, which finds the gold answer in
0.88 of jsquad article questions), each with its neighbours, up to a token budget.

Each kept run of sentences becomes an excerpt: a `Chunk` whose text is a verbatim
slice of its document (offsets and line numbers point into the file), so a citation
``[n]`` names the exact lines the model read and the checker tests it against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from pipeline.answer.backends.extractive import MIN_SENTENCE_CHARS  # headings carry no answer
from pipeline.documents import Chunk, Source

__all__ = ["DEFAULT_BUDGET_TOKENS", "DEFAULT_SEED_SENTENCES", "select_evidence", "sub_chunk"]

# Chosen by `benchmarks/evidence.py` on jsquad article questions (gold answer kept vs tokens read).
DEFAULT_BUDGET_TOKENS = 450
DEFAULT_SEED_SENTENCES = 3
NEIGHBOURS = 1  # sentences kept on each side of a chosen one: a subject often sits one sentence earlier
RANK_DECAY = 0.15  # a sentence of the k-th chunk counts 1 / (1 + RANK_DECAY * k) of one in the first


@dataclass(frozen=True)
class _Sentence:
    chunk_rank: int
    chunk: Chunk
    start: int  # offsets into chunk.text
    end: int
    doc_start: int  # offset into the document: the key that merges overlapping chunks


def _sentences(ranked: Sequence[Chunk]) -> list[list[_Sentence]]:
    """Each chunk's sentences, in order; a sentence already seen (chunk overlap) is left out."""
    from pipeline.japanese import split_sentences

    seen: set[tuple[str, int]] = set()
    out = []
    for rank, chunk in enumerate(ranked):
        row = []
        for start, end in split_sentences(chunk.text):
            key = (chunk.path, chunk.start + start)
            if key in seen:
                continue
            seen.add(key)
            row.append(_Sentence(rank, chunk, start, end, chunk.start + start))
        out.append(row)
    return out


def _score(wanted: set[str], lemmas: set[str], rank: int) -> float:
    overlap = len(wanted & lemmas)
    if overlap == 0:
        return 0.0
    # More matched question words first; among equals the denser (shorter) sentence, then the better chunk.
    return (overlap + 0.5 * overlap / math.sqrt(len(lemmas))) / (1.0 + RANK_DECAY * rank)


def select_evidence(
    question: str,
    ranked: Sequence[Chunk],
    analyzer,
    count_tokens: Callable[[str], int],
    *,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    seeds: int = DEFAULT_SEED_SENTENCES,
) -> list[Source]:
    """Numbered excerpts of `ranked` (best chunk first) for `question`, in document order.

    The `seeds` best sentences are taken with `NEIGHBOURS` on each side while the
    budget lasts; adjacent picks of one chunk join into one excerpt. Without any word
    in common with the question, the best chunk's first sentences are kept, so the model
    still sees what retrieval found and can say it does not know.
    """
    wanted = set(analyzer.content_lemmas(question))
    rows = _sentences(ranked)
    scored: list[tuple[float, int, int]] = []  # (score, row, index in row)
    for r, row in enumerate(rows):
        for i, s in enumerate(row):
            text = s.chunk.text[s.start : s.end]
            if len(text.strip()) < MIN_SENTENCE_CHARS:
                continue
            score = _score(wanted, set(analyzer.content_lemmas(text)), s.chunk_rank)
            if score > 0:
                scored.append((score, r, i))
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    picks = [(r, i) for _, r, i in scored[:seeds]]
    if not picks:
        picks = [(r, 0) for r, row in enumerate(rows) if row][:1]

    chosen: dict[int, set[int]] = {}
    used = 0
    for r, i in picks:
        row = rows[r]
        window = [j for j in range(i - NEIGHBOURS, i + NEIGHBOURS + 1) if 0 <= j < len(row)]
        # The seed itself first: its neighbours only if they fit too.
        for j in sorted(window, key=lambda j: abs(j - i)):
            if j in chosen.get(r, set()):
                continue
            s = row[j]
            cost = count_tokens(s.chunk.text[s.start : s.end])
            # A seed may run the budget over by half (one long sentence); a neighbour may not.
            if used + cost > budget_tokens * (1.5 if j == i else 1.0):
                if j == i:
                    break
                continue
            chosen.setdefault(r, set()).add(j)
            used += cost
    if not chosen and picks:  # one seed longer than the budget (a PDF line without stops): keep it anyway
        r, i = picks[0]
        chosen[r] = {i}
    excerpts = [_excerpt(rows[r], sorted(idx)) for r, idx in chosen.items()]
    excerpts = [e for run in excerpts for e in run]
    excerpts.sort(key=lambda c: (c.path, c.start))
    return [Source(number=n, chunk=c) for n, c in enumerate(excerpts, 1)]


def _excerpt(row: list[_Sentence], indexes: list[int]) -> list[Chunk]:
    """Runs of adjacent sentences of one chunk, each as a verbatim sub-chunk."""
    runs: list[list[int]] = []
    for i in indexes:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    out = []
    for run in runs:
        first, last = row[run[0]], row[run[-1]]
        out.append(sub_chunk(first.chunk, first.start, last.end))
    return out


def sub_chunk(chunk: Chunk, start: int, end: int) -> Chunk:
    """`chunk.text[start:end]` as a chunk of its own, offsets and lines into the document."""
    line_start = chunk.line_start + chunk.text.count("\n", 0, start)
    text = chunk.text[start:end]
    return replace(
        chunk,
        id=f"{chunk.id}#{start}-{end}",
        text=text,
        start=chunk.start + start,
        end=chunk.start + end,
        line_start=line_start,
        line_end=line_start + text.count("\n"),
        token_count=0,
    )

