"""The typed values that flow between stages: Document, Chunk, Span, StoredDocument,
ScoredChunk, Source; and `display_path`, how every layer shows a stored path.

All are frozen dataclasses. Conversion to llama-index nodes happens in one place
(`pipeline.nodes.chunk_to_node` / `node_to_chunk`).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Section:
    """A heading that starts at `start` (char offset into Document.text)."""

    start: int
    path: tuple[str, ...]  # heading path, outermost first: ("LLM", "推論パラメータ")


@dataclass(frozen=True)
class Document:
    """One source file, decoded.

    `text` is what the reader extracted. For text formats (Markdown, org, plain
    text) it is the decoded file verbatim (BOM dropped, CRLF/CR turned into LF), so
    char offsets and line numbers point into the file itself. For HTML and PDF it is
    the extracted visible text, and offsets point into that text.
    """

    path: str  # as given/resolved by the scanner (absolute, posix)
    text: str
    title: str
    format: str  # "markdown" | "org" | "text" | "html" | "pdf"
    encoding: str  # e.g. "utf-8", "utf-8-sig", "cp932", "euc_jp"
    mtime: float
    content_hash: str  # sha256 hex of the raw file bytes
    body_start: int = 0  # chunks start here (front matter / org header excluded)
    sections: tuple[Section, ...] = ()
    metadata: dict = field(default_factory=dict, hash=False, compare=False)

    def line_of(self, offset: int) -> int:
        """1-based line number of char offset `offset` in `text`."""
        return self.text.count("\n", 0, offset) + 1

    def heading_path_at(self, offset: int) -> tuple[str, ...]:
        starts = [s.start for s in self.sections]
        i = bisect.bisect_right(starts, offset) - 1
        return self.sections[i].path if i >= 0 else ()


@dataclass(frozen=True)
class Span:
    """Where a piece of text sits in its source document."""

    path: str
    start: int  # char offset into Document.text
    end: int
    lines: tuple[int, int]  # 1-based, inclusive


@dataclass(frozen=True)
class Chunk:
    """A verbatim slice `Document.text[start:end]` sized for the embedder."""

    id: str
    path: str
    text: str
    start: int
    end: int
    line_start: int
    line_end: int
    title: str = ""
    heading_path: tuple[str, ...] = ()
    token_count: int = 0
    doc_hash: str = ""

    @property
    def span(self) -> Span:
        return Span(self.path, self.start, self.end, (self.line_start, self.line_end))

    @property
    def location(self) -> str:
        """`path:line` (or `path:a-b`) for display."""
        if self.line_end != self.line_start:
            return f"{self.path}:{self.line_start}-{self.line_end}"
        return f"{self.path}:{self.line_start}"

    def to_dict(self, **fields) -> dict:
        """The JSON shape of a chunk in a listing (`rag search --json`, an answer's sources).

        `fields` (a score, whether it is cited) go before the text, which is the long part.
        """
        return {
            "path": display_path(self.path),
            "lines": [self.line_start, self.line_end],
            "start": self.start,
            "end": self.end,
            **fields,
            "text": self.text,
        }


def display_path(path: str) -> str:
    """`path` relative to the working directory when it lies below it, else as stored.

        >>> display_path(os.path.join(os.getcwd(), "notes", "a.md")) == os.path.join("notes", "a.md")
        True
    """
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def embed_header(title: str, heading_path: Sequence[str]) -> str:
    """The metadata line put before a chunk's text when embedding (and when matching titles)."""
    parts = [p for p in (title, *heading_path) if p]
    # Drop a heading equal to the title (a Markdown H1 usually is).
    deduped = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
    return " > ".join(deduped)


@dataclass(frozen=True)
class StoredDocument:
    """A document's indexed text, kept so long-context mode packs exactly what was indexed."""

    path: str
    title: str
    text: str  # Document.text[body_start:]
    body_start: int
    first_line: int  # line number of body_start
    hash: str


@dataclass(frozen=True)
class ScoredChunk:
    """A retrieved chunk and its score under the retriever that found it."""

    chunk: Chunk
    score: float
    linked_from: str | None = None  # the hit whose text names this chunk's document (index.links)

    def to_dict(self, **fields) -> dict:
        return self.chunk.to_dict(score=round(self.score, 6), **fields)


@dataclass(frozen=True)
class Source:
    """A chunk as shown to the LLM under the number ``[number]`` (1-based)."""

    number: int
    chunk: Chunk

    def to_dict(self, **fields) -> dict:
        return {"number": self.number, **self.chunk.to_dict(**fields)}
