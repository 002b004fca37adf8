"""Second hop: documents the best hit names by their title.

A multi-hop question names one document and asks about another that only the first
one names: 「川島明が所属する事務所の本店がある都道府県は？」 — the note on 川島明 says
吉本興業, and the answer is in the note titled 吉本興業, which shares almost no word with
the question, so neither BM25 nor the embedder ranks it. Notes link to each other the
same way (a page name, a [[wiki link]], a product named in passing).

After fusion, a document is placed right after the top hit when

- its title (NFKC, lower case, at least 2 characters, held by this document alone)
  appears in the top hit's text and not in the question, and
- the rest of the question — the query's BM25 tokens the top hit does not already
  hold — matches one of its chunks (BM25 score > 0).

The second condition keeps single-hop questions as they were: their top hit already
holds the question's words, so nothing is left to match a mentioned document.
Measured on the JSQuAD, JaQuAD and JEMHopQA sets: benchmarks/results/retrieval.md.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from pipeline.documents import ScoredChunk, embed_header

if TYPE_CHECKING:
    from pipeline.index.snapshot import IndexSnapshot

MIN_TITLE_CHARS = 2
MAX_LINKED = 3  # documents one hop may add


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


@dataclass(frozen=True)
class TitleIndex:
    """Document paths by normalized title, for titles held by exactly one document."""

    paths: dict[str, str]
    lengths: tuple[int, ...]  # the distinct title lengths, to look up substrings

    @classmethod
    def build(cls, titles: dict[str, str]) -> "TitleIndex":
        """`titles`: path -> title."""
        holders: dict[str, list[str]] = defaultdict(list)
        for path, title in titles.items():
            t = _norm(title or "").strip()
            if len(t) >= MIN_TITLE_CHARS:
                holders[t].append(path)
        paths = {t: ps[0] for t, ps in holders.items() if len(ps) == 1}
        return cls(paths, tuple(sorted({len(t) for t in paths})))

    def named_in(self, text: str) -> list[str]:
        """Paths of the documents whose title occurs in `text`, in order of first mention."""
        t = _norm(text)
        found: dict[str, int] = {}
        for n in self.lengths:
            for i in range(len(t) - n + 1):
                path = self.paths.get(t[i : i + n])
                if path is not None and path not in found:
                    found[path] = i
        return sorted(found, key=found.get)


def follow_links(
    index: "IndexSnapshot", query: str, query_tokens: Sequence[str], hits: list["ScoredChunk"]
) -> list["ScoredChunk"]:
    """`hits` with the documents the top hit names (see the module doc) put after it."""
    from pipeline.index.bm25 import bm25_tokens

    if not hits:
        return hits
    top = hits[0]
    titles = index.title_index
    in_question = set(titles.named_in(query))
    named = [p for p in titles.named_in(top.chunk.text) if p != top.chunk.path and p not in in_question]
    if not named:
        return hits
    top_text = embed_header(top.chunk.title, top.chunk.heading_path) + "\n" + top.chunk.text
    held = set(bm25_tokens(index.analyzer, top_text))
    rest = [t for t in query_tokens if t not in held]
    if not rest:
        return hits
    scores = index.bm25.scores(rest)
    linked: list[tuple[float, str]] = []
    for path in named:
        best = max(((scores.get(cid, 0.0), cid) for cid in index.chunk_ids_of(path)), default=(0.0, ""))
        if best[0] > 0:
            linked.append(best)
    if not linked:
        return hits
    linked.sort(key=lambda sc: -sc[0])
    added = [
        ScoredChunk(index.chunks[cid], top.score, linked_from=top.chunk.id)
        for _, cid in linked[:MAX_LINKED]
    ]
    ids = {a.chunk.id for a in added}
    return [top, *added, *(h for h in hits[1:] if h.chunk.id not in ids)]
