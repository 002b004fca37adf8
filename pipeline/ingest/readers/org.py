"""Org-mode: `#+KEY: value` header (and a top :PROPERTIES: drawer), `*` headings without
TODO keywords, priorities and tags, `<2025-03-11 Tue 08:28>` timestamps."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.ingest.readers.base import Parsed, add_timestamps, first_h1, line_starts, nested_sections, warn
from pipeline.ingest.readers.decode import decode

_ORG_KEYWORD = re.compile(r"^#\+([A-Za-z][\w-]*):[ \t]*(.*?)[ \t]*$")
_ORG_HEADING = re.compile(r"^(\*+)[ \t]+(.*?)[ \t]*$")
_ORG_TAGS = re.compile(r"[ \t]+(:[\w@#%:]+:)$")
_ORG_PRIORITY = re.compile(r"^\[#[A-Za-z0-9]\][ \t]*")
ORG_TODO_KEYWORDS = ("TODO", "NEXT", "STARTED", "DOING", "WAITING", "WAIT", "HOLD", "SOMEDAY",
                     "PROJ", "DONE", "CANCELLED", "CANCELED")  # fmt: skip


def _org_header(text: str) -> tuple[dict, int]:
    """Leading `#+KEY: value` lines (and a top :PROPERTIES: drawer, blank and `# ` comment
    lines) -> (metadata with lower-cased keys, body_start)."""
    meta: dict = {}
    body_start = 0
    in_drawer = False
    for start, line in line_starts(text):
        stripped = line.strip()
        if in_drawer:
            if stripped.upper() == ":END:":
                in_drawer = False
            else:
                m = re.match(r"^:([^:\s]+):[ \t]*(.*)$", stripped)
                if m:
                    meta.setdefault("properties", {})[m.group(1).lower()] = m.group(2).strip()
            body_start = start + len(line) + 1
            continue
        if stripped.upper() == ":PROPERTIES:" and not meta and body_start == 0:
            in_drawer = True
            body_start = start + len(line) + 1
            continue
        m = _ORG_KEYWORD.match(line)
        if m:
            key, value = m.group(1).lower(), m.group(2)
            if key in meta and isinstance(meta[key], str):
                meta[key] = f"{meta[key]} {value}".strip()
            else:
                meta[key] = value
            body_start = start + len(line) + 1
            continue
        if not stripped or line.startswith("# ") or stripped == "#":
            continue
        break
    return meta, min(body_start, len(text))


def _org_todo_keywords(meta: dict) -> set[str]:
    words = set(ORG_TODO_KEYWORDS)
    for key in ("todo", "seq_todo", "typ_todo"):
        for w in str(meta.get(key, "")).split():
            if w != "|":
                words.add(re.sub(r"\(.*\)$", "", w))
    return words


def _org_heading_text(rest: str, todo: set[str]) -> str:
    rest = _ORG_TAGS.sub("", rest)
    first, _, tail = rest.partition(" ")
    if first in todo:
        rest = tail.lstrip()
    rest = _ORG_PRIORITY.sub("", rest)
    return rest.strip()


def parse(path: Path, raw: bytes) -> Parsed:
    decoded = decode(raw)
    text = decoded.text
    metadata, body_start = _org_header(text)
    if "filetags" in metadata:
        metadata["tags"] = [t for t in re.split(r"[:\s]+", metadata["filetags"]) if t]
    todo = _org_todo_keywords(metadata)
    headings = []
    for start, line in line_starts(text[body_start:]):
        m = _ORG_HEADING.match(line)
        if m:
            heading = _org_heading_text(m.group(2), todo)
            if heading:
                headings.append((body_start + start, len(m.group(1)), heading))
    title = str(metadata.get("title", "")).strip()
    if not title:
        title = first_h1(headings)
    add_timestamps(metadata, text)
    warn(metadata, decoded.warning)
    return Parsed(text, title, decoded.encoding, body_start, nested_sections(headings), metadata)

