"""Markdown: YAML front matter (PyYAML) and headings (markdown-it-py, CommonMark).

Front matter is a YAML mapping between a first line `---` and the next `---` or `...`
line. Its keys go to `Document.metadata` (dates as ISO strings, `tags` as a list of
strings), `title` names the document, and the body starts after the closing line.
Front matter that is not valid YAML is still skipped, with `metadata["warning"]`
saying so, and the note is indexed; a block that parses as plain text or a list rather
than a mapping is not front matter (a note may open with a horizontal rule).

Headings are CommonMark's, ATX (`# …`) and setext (`Title` over `===` or `---`), at the
top level only (not inside block quotes or list items, nor in code blocks or fences).
A section starts at the first line of its heading.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

from pipeline.ingest.readers.base import Parsed, add_timestamps, first_h1, line_starts, nested_sections, warn
from pipeline.ingest.readers.decode import decode

FRONT_MATTER_OPEN = "---"
FRONT_MATTER_CLOSE = ("---", "...")


def _bad_front_matter(err: Exception) -> str:
    where = getattr(err, "problem_mark", None)
    line = f" {where.line + 2} 行目" if where is not None else ""  # +1: 1-based, +1: the opening ---
    return f"フロントマターの YAML を読めないため無視しました{line} (invalid YAML front matter skipped)"


def _plain(value):
    """A YAML value as JSON-like data: dates become ISO strings, keys strings."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def front_matter(text: str) -> tuple[dict, int, str | None] | None:
    """(metadata, body_start, warning) for YAML front matter at the top of `text`, else None."""
    lines = list(line_starts(text))
    if not lines or lines[0][1].rstrip() != FRONT_MATTER_OPEN:
        return None
    end = next((i for i in range(1, len(lines)) if lines[i][1].rstrip() in FRONT_MATTER_CLOSE), None)
    if end is None:
        return None
    body_start = min(lines[end][0] + len(lines[end][1]) + 1, len(text))
    import yaml

    try:
        data = yaml.safe_load(text[lines[1][0] : lines[end][0]])
    except yaml.YAMLError as err:
        return {}, body_start, _bad_front_matter(err)
    if data is None:
        return {}, body_start, None
    if not isinstance(data, dict):
        return None
    return _plain(data), body_start, None


def _as_tags(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else re.split(r"[,\s]+", str(value))
    return [str(t).strip().lstrip("#") for t in items if str(t).strip().lstrip("#")]


@lru_cache(maxsize=1)
def _markdown_it():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def headings(body: str, offset: int = 0) -> list[tuple[int, int, str]]:
    """(start, level, text) of the top-level headings of `body`; `start` is `offset` plus the
    char offset of the heading's first line (markdown-it maps tokens to line numbers)."""
    starts = [start for start, _ in line_starts(body)]
    tokens = _markdown_it().parse(body)
    found = []
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open" or tok.level != 0 or not tok.map:
            continue
        title = " ".join(part.strip() for part in tokens[i + 1].content.split("\n")).strip()
        if title:
            found.append((offset + starts[tok.map[0]], int(tok.tag[1:]), title))
    return found


def parse(path: Path, raw: bytes) -> Parsed:
    decoded = decode(raw)
    text = decoded.text
    metadata: dict = {}
    body_start = 0
    fm = front_matter(text)
    if fm is not None:
        front, body_start, fm_warning = fm
        metadata.update(front)
        if "tags" in front:
            metadata["tags"] = _as_tags(front["tags"])
        warn(metadata, fm_warning)
    found = headings(text[body_start:], body_start)
    title = str(metadata.get("title") or "").strip() or first_h1(found)
    add_timestamps(metadata, text[body_start:])
    warn(metadata, decoded.warning)
    return Parsed(text, title, decoded.encoding, body_start, nested_sections(found), metadata)
