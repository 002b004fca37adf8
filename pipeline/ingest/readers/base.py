"""What every format reader shares: the parse result, the refusal, and heading/timestamp helpers.

A format module exposes `parse(path, raw) -> Parsed` and raises `Unreadable(reason)`;
`read_document` turns that into `ReadError(path, reason)`.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Iterator, NamedTuple

from pipeline.documents import Section


class Unreadable(Exception):
    """Raised inside the readers; read_document turns it into ReadError(path, reason)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Parsed(NamedTuple):
    text: str
    title: str
    encoding: str
    body_start: int
    sections: tuple[Section, ...]
    metadata: dict


def line_starts(text: str) -> Iterator[tuple[int, str]]:
    """Yield (offset, line) for each line of `text` (without its newline)."""
    pos = 0
    for line in text.split("\n"):
        yield pos, line
        pos += len(line) + 1


def nested_sections(headings: list[tuple[int, int, str]]) -> tuple[Section, ...]:
    """(start, level, text) in document order -> Sections whose path nests by level."""
    stack: list[tuple[int, str]] = []
    sections = []
    for start, level, title in headings:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        sections.append(Section(start=start, path=tuple(t for _, t in stack)))
    return tuple(sections)


def first_h1(headings: list[tuple[int, int, str]]) -> str:
    return next((t for _, level, t in headings if level == 1), "")


def warn(metadata: dict, warning: str | None) -> None:
    """Add `warning` to `metadata["warning"]` (joined with "; " when there is one already)."""
    if warning:
        metadata["warning"] = f"{metadata['warning']}; {warning}" if "warning" in metadata else warning


_DAY = r"[^\s\d>\]]+"  # Tue, 火, Di. …
_TIMESTAMP = re.compile(
    rf"[<\[](\d{{4}})-(\d{{2}})-(\d{{2}})(?:\s+{_DAY})?(?:\s+(\d{{1,2}}):(\d{{2}})(?:-\d{{1,2}}:\d{{2}})?)?"
    r"(?:\s+[.+\-]{1,2}\d+[hdwmy](?:/\d+[hdwmy])?)*\s*[>\]]"
)


def timestamps(text: str) -> list[str]:
    """Org-style timestamps (<2025-03-11 Tue 08:28>, [2025-03-11 Tue]) as ISO strings,
    in document order, without repeats."""
    found: dict[str, None] = {}
    for m in _TIMESTAMP.finditer(text):
        y, mo, d, hh, mm = m.groups()
        try:
            if hh is None:
                iso = date(int(y), int(mo), int(d)).isoformat()
            else:
                iso = datetime(int(y), int(mo), int(d), int(hh), int(mm)).isoformat(timespec="minutes")
        except ValueError:
            continue
        found.setdefault(iso, None)
    return list(found)


def add_timestamps(metadata: dict, text: str) -> None:
    stamps = timestamps(text)
    if stamps:
        metadata["timestamps"] = stamps
