"""Context packing: numbered sources, in a stable order, fenced as data.

Retrieve mode keeps retrieved chunks in document order (OP-RAG). Long-context mode
packs whole documents sorted by path, so the packed corpus is byte-identical from
question to question and its KV state can be cached; the question always comes last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from pipeline.documents import Chunk, Source, StoredDocument

SOURCE_SEPARATOR = "\n\n"  # between two rendered sources
# Its tokens, counted per packed document (rounded up: one or two with any tokenizer).
SEPARATOR_TOKENS = 2


def document_chunk(doc: StoredDocument) -> Chunk:
    """A whole indexed document as one citable span."""
    end = doc.body_start + len(doc.text)
    return Chunk(
        id=f"doc:{doc.hash[:16]}",
        path=doc.path,
        text=doc.text,
        start=doc.body_start,
        end=end,
        line_start=doc.first_line,
        line_end=doc.first_line + doc.text.count("\n", 0, max(len(doc.text.rstrip("\n")), 0)),
        title=doc.title,
        doc_hash=doc.hash,
    )


def in_document_order(chunks: Iterable[Chunk]) -> list[Chunk]:
    return sorted(chunks, key=lambda c: (c.path, c.start))


def number_sources(chunks: Sequence[Chunk]) -> list[Source]:
    return [Source(number=i, chunk=c) for i, c in enumerate(chunks, 1)]


def render_source(source: Source, display_path) -> str:
    c = source.chunk
    title = f" 題名={c.title!r}" if c.title else ""
    return (
        f'<資料 番号="{source.number}" 出典="{display_path(c.path)}:{c.line_start}-{c.line_end}"{title}>\n'
        f"{c.text.strip()}\n"
        f"</資料>"
    )


def render_sources(sources: Sequence[Source], display_path=lambda p: p) -> str:
    return SOURCE_SEPARATOR.join(render_source(s, display_path) for s in sources)


def whole_corpus(docs: Iterable[StoredDocument]) -> list[Source]:
    """Every document, whole, in path order: the long-context pack (nothing to count)."""
    return number_sources([document_chunk(d) for d in sorted(docs, key=lambda d: d.path)])


@dataclass(frozen=True)
class PackedDocuments:
    sources: list[Source]
    tokens: int
    dropped: int  # documents that did not fit


def pack_documents(
    docs: Sequence[StoredDocument],
    count_tokens,
    budget: int,
    priority: Sequence[str] | None = None,
    display_path=lambda p: p,
) -> PackedDocuments:
    """Whole documents up to `budget` tokens.

    With `priority` (paths, best first) the best-matching documents are taken until
    the budget is full (the middle mode); the packed set is then put in path order.
    """
    by_path = {d.path: d for d in docs}
    order = list(priority or []) + sorted(p for p in by_path if p not in set(priority or []))
    chosen: list[StoredDocument] = []
    used = 0
    for path in order:
        d = by_path.get(path)
        if d is None:
            continue
        n = count_tokens(render_source(Source(0, document_chunk(d)), display_path)) + SEPARATOR_TOKENS
        if used + n > budget:
            continue
        chosen.append(d)
        used += n
    chosen.sort(key=lambda d: d.path)
    return PackedDocuments(number_sources([document_chunk(d) for d in chosen]), used, len(by_path) - len(chosen))
