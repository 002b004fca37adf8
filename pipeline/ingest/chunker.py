"""Japanese chunker: whole sentences packed up to a token budget.

A llama-index `NodeParser` (`_parse_nodes` is ours; the base class's offset
re-finding is undone, see `_postprocess_parsed_nodes`), plus `chunk_document` for
the pipeline's own `Document`. Every chunk is a verbatim slice of the source
text, in document order, so offsets and line numbers point back into the file.
A sentence is cut only when it alone exceeds the budget, and then at a morpheme
boundary.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import replace
from pathlib import PurePath
from typing import Any, Callable, Sequence

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.node_parser import NodeParser
from llama_index.core.node_parser.node_utils import default_id_func
from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, TextNode

from pipeline.documents import Chunk, Document, embed_header
from pipeline.nodes import chunk_to_node

DEFAULT_CHUNK_TOKENS = 300
MAX_CHUNK_TOKENS = 512  # e5's position limit
DEFAULT_OVERLAP_SENTENCES = 1
MIN_TEXT_BUDGET = 32

Spans = list[tuple[int, int]]


def chunk_id(path: str, doc_hash: str, start: int, end: int) -> str:
    """Deterministic: re-ingesting the same file version gives the same IDs."""
    return hashlib.sha256(f"{path}\0{doc_hash}\0{start}\0{end}".encode()).hexdigest()[:32]


def _default_sentences(text: str) -> Spans:
    from pipeline.japanese import default_analyzer

    # Analyzer.sentences never cuts inside a MeCab token.
    return default_analyzer().sentences(text)


def _default_boundaries(text: str) -> list[int]:
    from pipeline.japanese import default_analyzer

    return default_analyzer().morpheme_boundaries(text)


class JapaneseChunker(NodeParser):
    """Pack whole Japanese sentences into chunks of at most `chunk_tokens` tokens."""

    chunk_tokens: int = Field(
        default=DEFAULT_CHUNK_TOKENS,
        gt=0,
        le=MAX_CHUNK_TOKENS,
        description="Token budget per chunk, metadata header included (embedder tokens).",
    )
    overlap_sentences: int = Field(
        default=DEFAULT_OVERLAP_SENTENCES,
        ge=0,
        description="Sentences repeated at the start of the next chunk.",
    )
    token_counter: Callable[[str], int] = Field(
        description="Counts tokens with the embedding model's own tokenizer.", exclude=True
    )
    sentence_splitter: Callable[[str], Spans] = Field(
        default=_default_sentences, description="text -> sentence spans.", exclude=True
    )
    boundary_finder: Callable[[str], list[int]] = Field(
        default=_default_boundaries,
        description="text -> char offsets where morphemes start.",
        exclude=True,
    )
    # Token counts of the document being chunked: a chunk's span is counted when it is
    # packed and again for its `token_count` (each count is a tokenizer call).
    _counts: dict[str, int] = PrivateAttr(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "JapaneseChunker"

    # -- pure core -------------------------------------------------------------

    def _count(self, text: str) -> int:
        n = self._counts.get(text)
        if n is None:
            n = self._counts[text] = self.token_counter(text)
        return n

    def split_spans(self, text: str, start: int = 0, budget: int | None = None) -> Spans:
        """Chunk spans (start, end) over `text[start:]`, in order."""
        budget = self.chunk_tokens if budget is None else budget
        sentences = [(s + start, e + start) for s, e in self.sentence_splitter(text[start:])]
        units: list[tuple[int, int, int]] = []  # (start, end, tokens)
        for s, e in sentences:
            n = self._count(text[s:e])
            if n <= budget:
                units.append((s, e, n))
            else:
                units.extend(self._cut_long_sentence(text, s, e, budget))

        chunks: Spans = []
        i = 0
        while i < len(units):
            j, used = i, 0
            while j < len(units) and (j == i or used + units[j][2] <= budget):
                used += units[j][2]
                j += 1
            # The sum of parts can undercount the joined slice; shrink until it fits.
            while j - i > 1 and self._count(text[units[i][0] : units[j - 1][1]]) > budget:
                j -= 1
            chunks.append((units[i][0], units[j - 1][1]))
            if j >= len(units):
                break
            # Overlap: restart a few sentences back, but always make progress and
            # never let the overlap take more than half the budget.
            back = min(self.overlap_sentences, j - i - 1)
            while back > 0 and sum(u[2] for u in units[j - back : j]) > budget // 2:
                back -= 1
            i = j - back
        return chunks

    def _cut_long_sentence(
        self, text: str, start: int, end: int, budget: int
    ) -> list[tuple[int, int, int]]:
        """Cut one over-budget sentence at morpheme boundaries.

        Each piece is the longest run of morphemes that fits the budget, found by a
        galloping then binary search, so a huge unpunctuated line costs O(n log n).
        """
        sentence = text[start:end]
        n = len(sentence)
        cuts = sorted({b for b in self.boundary_finder(sentence) if 0 < b < n}) + [n]
        pieces: list[tuple[int, int, int]] = []
        lo = 0
        while lo < n:
            first = bisect.bisect_right(cuts, lo)  # index of the first cut after lo
            # Probes are not memoized: on a huge unpunctuated line they would be most of memory.
            fits = lambda i: self.token_counter(sentence[lo : cuts[i]]) <= budget
            # Gallop: double the step until a cut no longer fits (or the end is reached).
            good, step = None, 1
            probe = first
            while probe < len(cuts) and fits(probe):
                good = probe
                probe = first + step
                step *= 2
            if good is None:
                best = first  # one morpheme alone is over budget: keep it whole
            else:
                left, right = good + 1, min(probe, len(cuts)) - 1
                best = good
                while left <= right:
                    mid = (left + right) // 2
                    if fits(mid):
                        best, left = mid, mid + 1
                    else:
                        right = mid - 1
            hi = cuts[best]
            pieces.append((start + lo, start + hi, self._count(sentence[lo:hi])))
            lo = hi
        return pieces

    def chunk_document(self, doc: Document) -> list[Chunk]:
        """Chunks of one document, header tokens counted in the budget."""
        self._counts.clear()
        try:
            return self._chunk_document(doc)
        finally:
            self._counts.clear()

    def _chunk_document(self, doc: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        header_tokens = self._header_tokens(doc)
        budget = self.chunk_tokens - header_tokens
        if budget < min(MIN_TEXT_BUDGET, self.chunk_tokens // 2):
            raise ValueError(
                f"{doc.path}: title/heading metadata takes {header_tokens} tokens of the "
                f"{self.chunk_tokens}-token budget; raise chunk_tokens or shorten the title"
            )
        for s, e in self._section_spans(doc, budget):
            heading = doc.heading_path_at(s)
            chunks.append(
                Chunk(
                    id=chunk_id(doc.path, doc.content_hash, s, e),
                    path=doc.path,
                    text=doc.text[s:e],
                    start=s,
                    end=e,
                    line_start=doc.line_of(s),
                    line_end=doc.line_of(e - 1) if e > s else doc.line_of(s),
                    title=doc.title,
                    heading_path=heading,
                    token_count=self._count(doc.text[s:e]),
                    doc_hash=doc.content_hash,
                )
            )
        return chunks

    def _section_spans(self, doc: Document, budget: int) -> Spans:
        """A heading always starts a new chunk: chunk each section on its own."""
        cuts = sorted({doc.body_start, *(s.start for s in doc.sections if s.start > doc.body_start)})
        spans: Spans = []
        for lo, hi in zip(cuts, [*cuts[1:], len(doc.text)]):
            spans.extend(
                (s + lo, e + lo) for s, e in self.split_spans(doc.text[lo:hi], 0, budget)
            )
        return spans

    def _header_tokens(self, doc: Document) -> int:
        # The longest header of any section bounds every chunk's header.
        paths = {()} | {s.path for s in doc.sections}
        return max(self.token_counter(embed_header(doc.title, p) + "\n") for p in paths)

    # -- llama-index face --------------------------------------------------------

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        """Chunks of each node's text, as `TextNode`s made by `chunk_to_node`.

        The path is the node's `file_path` (or `path`) metadata, and the IDs are
        `chunk_id(path, sha256(text), start, end)`, so the same text chunks to the same
        IDs in every run, as `rag ingest` does. A caller's own `id_func` wins when given.
        Each node points back at its source node: the base class then merges the
        source's metadata (ours win) and links prev/next.
        """
        out: list[BaseNode] = []
        for node in nodes:
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            meta = node.metadata
            path = str(meta.get("file_path") or meta.get("path") or "")
            doc = Document(
                path=path,
                text=text,
                title=str(meta.get("title") or (PurePath(path).stem if path else "")),
                format="text",
                encoding="utf-8",
                mtime=0.0,
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
            )
            source = node.as_related_node_info()
            for i, chunk in enumerate(self.chunk_document(doc)):
                if self.id_func is not default_id_func:
                    chunk = replace(chunk, id=self.id_func(i, node))
                tn = chunk_to_node(chunk)
                tn.relationships[NodeRelationship.SOURCE] = source
                # The source's own bookkeeping (a reader's file_path, dates) stays out too.
                tn.excluded_embed_metadata_keys = _union(
                    tn.excluded_embed_metadata_keys, node.excluded_embed_metadata_keys
                )
                tn.excluded_llm_metadata_keys = _union(
                    tn.excluded_llm_metadata_keys, node.excluded_llm_metadata_keys
                )
                out.append(tn)
        return out

    def _postprocess_parsed_nodes(
        self, nodes: list[BaseNode], parent_doc_map: dict[str, Any]
    ) -> list[BaseNode]:
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        # The base class re-finds each node's text with str.find from just after the
        # previous node's start, which lands on an earlier copy when text repeats (a
        # line written twice, a rule of "----"); our offsets are exact.
        for n in nodes:
            if isinstance(n, TextNode):
                n.start_char_idx, n.end_char_idx = n.metadata["start"], n.metadata["end"]
        return nodes


def _union(keys: list[str], more: list[str]) -> list[str]:
    return [*keys, *(k for k in more if k not in keys)]
