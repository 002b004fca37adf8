"""Plain text: Scrapbox-style notes, where an emoji-prefixed page link line is a heading."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.documents import Section
from pipeline.ingest.readers.base import Parsed, add_timestamps, line_starts, warn
from pipeline.ingest.readers.decode import decode

TEXT_TITLE_MAX = 60  # a first line at least this long is not taken as a title

# One emoji: a pictograph (U+1F000–1FAFF), misc symbol/dingbat (U+2600–27BF), a few
# other symbols often used as icons, or a regional-indicator flag pair; with optional
# variation selector, skin tone, and ZWJ sequences.
_EMOJI_CHAR = "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u231a\u231b\u23e9-\u23fa\u3297\u3299]"
_EMOJI = (
    rf"(?:[\U0001f1e6-\U0001f1ff]{{2}}|{_EMOJI_CHAR}[\ufe0f\U0001f3fb-\U0001f3ff]*"
    rf"(?:\u200d{_EMOJI_CHAR}[\ufe0f\U0001f3fb-\U0001f3ff]*)*)"
)
_EMOJI_RE = re.compile(_EMOJI)
_EMOJI_LINK = re.compile(rf"^{_EMOJI}(\S.*)$")
_SCRAPBOX_BOLD = re.compile(r"^\[(\*+)[ \t]+([^\]]+)\]$")
EMOJI_HEADING_MAX = 40  # chars after the emoji
_SENTENCE_END = tuple("。．.!！?？:：、,，")


def _emoji_heading(line: str) -> str | None:
    """The heading text if `line` is a Scrapbox-style page-link heading, else None.

    Heuristic: the line, flush left, is one emoji immediately followed by a short name
    (≤ EMOJI_HEADING_MAX chars) with no other emoji, not ending like a sentence
    (。 . ! ? : 、 ,) and without a sentence break ("。" or ". ") inside:
    `🐥Glossary`, `😛ハルシネーション`, `🇯🇵国産LLM` are headings; `- 🤖Claude`,
    `🤖LLMを活用する🤖AI Agents.`, `🔖GoogleのチャットAI. 旧Bard.` are not.
    A Scrapbox bold line `[** 見出し]` is a heading too.
    """
    line = line.rstrip()
    bold = _SCRAPBOX_BOLD.match(line)
    if bold:
        return line
    m = _EMOJI_LINK.match(line)
    if not m:
        return None
    name = m.group(1)
    if (
        len(name) > EMOJI_HEADING_MAX
        or _EMOJI_RE.search(name)
        or name.endswith(_SENTENCE_END)
        or "。" in name
        or ". " in name
    ):
        return None
    return line


def _text_title(text: str) -> str:
    """The first non-empty line if it looks like a title: shorter than TEXT_TITLE_MAX
    chars and not a sentence (no 。, not ending with 。．.)."""
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        if len(line) < TEXT_TITLE_MAX and "。" not in line and not line.endswith(("．", ".")):
            return line
        return ""
    return ""


def parse(path: Path, raw: bytes) -> Parsed:
    decoded = decode(raw)
    text = decoded.text
    sections = tuple(
        Section(start=start, path=(heading,))
        for start, line in line_starts(text)
        if (heading := _emoji_heading(line)) is not None
    )
    metadata: dict = {}
    add_timestamps(metadata, text)
    warn(metadata, decoded.warning)
    return Parsed(text, _text_title(text), decoded.encoding, 0, sections, metadata)

