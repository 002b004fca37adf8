"""The one boundary between our Chunk and llama-index's nodes, both ways.

llama-index is imported inside the functions: the query path reads Chunks from the
snapshot and never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.documents import Chunk, embed_header

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode, TextNode

# Keys that locate a chunk; they never enter the embedded or LLM text.
BOOKKEEPING_KEYS = ("path", "start", "end", "line_start", "line_end", "doc_hash", "token_count")
EMBED_METADATA_TEMPLATE = "{value}"
EMBED_TEXT_TEMPLATE = "{metadata_str}\n{content}"


def chunk_to_node(chunk: Chunk) -> "TextNode":
    """The one place a Chunk becomes a llama-index node."""
    from llama_index.core.schema import TextNode

    metadata = {
        "path": chunk.path,
        "title": chunk.title,
        "heading": embed_header(chunk.title, chunk.heading_path),
        "start": chunk.start,
        "end": chunk.end,
        "line_start": chunk.line_start,
        "line_end": chunk.line_end,
        "doc_hash": chunk.doc_hash,
        "token_count": chunk.token_count,
        "heading_path": "\u241f".join(chunk.heading_path),
    }
    return TextNode(
        id_=chunk.id,
        text=chunk.text,
        metadata=metadata,
        start_char_idx=chunk.start,
        end_char_idx=chunk.end,
        excluded_embed_metadata_keys=[*BOOKKEEPING_KEYS, "title", "heading_path"],
        excluded_llm_metadata_keys=[*BOOKKEEPING_KEYS, "heading_path"],
        # The embedded text is exactly what `rag ingest` embeds: "<header>\n<text>", so a
        # llama-index pipeline over these nodes computes the same vectors as ours.
        metadata_template=EMBED_METADATA_TEMPLATE,
        text_template=EMBED_TEXT_TEMPLATE,
    )


def node_to_chunk(node: "BaseNode") -> Chunk:
    """The one place a llama-index node (or Chroma record) becomes a Chunk."""
    m = node.metadata
    heading = m.get("heading_path") or ""
    return Chunk(
        id=node.node_id,
        path=m["path"],
        text=node.get_content(),
        start=int(m["start"]),
        end=int(m["end"]),
        line_start=int(m["line_start"]),
        line_end=int(m["line_end"]),
        title=m.get("title", ""),
        heading_path=tuple(heading.split("\u241f")) if heading else (),
        token_count=int(m.get("token_count", 0)),
        doc_hash=m.get("doc_hash", ""),
    )
