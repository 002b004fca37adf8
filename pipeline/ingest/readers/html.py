"""HTML: visible text, one line per block element; h1–h6 headings; the <title> and
<meta name="description">. Decoded with the charset a <meta> declares as a hint."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.ingest.readers.base import Parsed, first_h1, nested_sections, warn
from pipeline.ingest.readers.decode import declared_charset, decode, normalize_newlines

HTML_NO_TEXT = "表示されるテキストがありません (no visible text)"

_HTML_DROP = ("script", "style", "noscript", "template", "head")
_HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_HTML_BLOCKS = frozenset(
    "address article aside blockquote body caption center dd details dialog dir div dl dt "
    "fieldset figcaption figure footer form header hgroup hr html legend li main menu nav "
    "ol option p section summary table tbody tfoot thead tr ul".split()
)
_HTML_CELLS = frozenset(("td", "th"))
_WIDE = "\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
_SEGMENT_BREAK = re.compile(rf"(?<=[{_WIDE}])[ \t\r\f]*\n[ \t\r\n\f]*(?=[{_WIDE}])")
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")


def _squash(s: str) -> str:
    """Collapse HTML white space; a line break between two CJK chars disappears
    (as browsers render it, CSS Text 3 segment-break rule)."""
    return _HTML_SPACE.sub(" ", _SEGMENT_BREAK.sub("", s)).strip()


def _html_blocks(root) -> list[tuple[str, int | None]]:
    """Visible text of `root` as (line, heading level or None), one per block."""
    from bs4 import NavigableString

    blocks: list[tuple[str, int | None]] = []
    inline: list[str] = []

    def flush():
        if inline:
            s = _squash("".join(inline))
            inline.clear()
            if s:
                blocks.append((s, None))

    stack = [(root, iter(root.children))]
    while stack:
        parent, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if parent.name in _HTML_BLOCKS:
                flush()
            elif parent.name in _HTML_CELLS:
                inline.append(" ")
            continue
        if isinstance(child, NavigableString):
            if type(child) is NavigableString or child.__class__.__name__ == "CData":
                inline.append(str(child))
            continue
        name = (child.name or "").lower()
        if name == "br":
            flush()
        elif name in _HTML_HEADINGS:
            flush()
            s = _squash(child.get_text())
            if s:
                blocks.append((s, _HTML_HEADINGS[name]))
        elif name == "pre":
            flush()
            s = normalize_newlines(child.get_text()).strip("\n")
            if s.strip():
                blocks.append((s, None))
        else:
            if name in _HTML_BLOCKS:
                flush()
            stack.append((child, iter(child.children)))
    flush()
    return blocks


def parse(path: Path, raw: bytes) -> Parsed:
    from bs4 import BeautifulSoup, Comment

    decoded = decode(raw, declared=declared_charset(raw))
    soup = BeautifulSoup(decoded.text, "html.parser")
    metadata: dict = {}
    title = _squash(soup.title.get_text()) if soup.title else ""
    desc = soup.find("meta", attrs={"name": re.compile("^description$", re.I)})
    if desc and desc.get("content"):
        metadata["description"] = _squash(str(desc["content"]))
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    lines = []
    headings = []
    pos = 0
    for line, level in _html_blocks(soup):
        if level is not None:
            headings.append((pos, level, line))
        lines.append(line)
        pos += len(line) + 1
    text = "\n".join(lines)
    if not title:
        title = first_h1(headings)
    warn(metadata, decoded.warning)
    return Parsed(text, title, decoded.encoding, 0, nested_sections(headings), metadata)

