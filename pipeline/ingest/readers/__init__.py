"""Reading one file into a `Document`: bytes -> text -> title, sections, metadata.

One module per step: `decode` (bytes -> str), then one per format (`markdown`, `org`,
`text`, `html`, `pdf`), each with `parse(path, raw) -> Parsed`; `base` holds what they share.

    read_document(path) -> Document      dispatch on the suffix (SUPPORTED_SUFFIXES)
    format_of(path) -> str | None        "markdown" | "org" | "text" | "html" | "pdf"

Formats, by suffix (case-insensitive):

    .md .markdown   markdown   YAML front matter (PyYAML), CommonMark headings: ATX and
                               setext, not in code fences (markdown-it-py)
    .org            org        #+KEY: header, * headings, <2025-03-11 Tue 08:28> timestamps
    .txt .text      text       Scrapbox-style notes: emoji-prefixed page links are headings
    (no suffix)     text       read as plain text (not in SUPPORTED_SUFFIXES: a folder scan
                               would pick up LICENSE, Makefile…; pass such files explicitly)
    .html .htm      html       visible text, one line per block element, h1–h6 headings
    .pdf            pdf        pypdf text per page, pages joined by a blank line

Decoding (text formats and HTML), in this order:

1. BOM: UTF-8 (dropped, encoding "utf-8-sig"), UTF-16 LE/BE ("utf-16").
2. NUL bytes in the first 8 KB -> binary, ReadError.
3. ISO-2022-JP escape sequences in 7-bit data -> "iso2022_jp".
4. Strict UTF-8 ("utf-8").
5. HTML only: the charset a <meta> declares (Shift_JIS labels map to cp932).
6. Japanese legacy encodings: cp932 (superset of Shift_JIS) and euc_jp, each decoded
   strictly. When both decode, charset-normalizer (restricted to the two) picks,
   unless its pick holds more chars outside the Japanese/ASCII repertoire than the
   other reading (misreading EUC-JP as cp932 gives half-width katakana; the reverse
   gives control or private-use chars); a reading that must drop a partial char at
   the end counts as TRUNCATION_MISFIT odd chars; a tie with no verdict goes to cp932.
   Strict UTF-8 in step 4 is second-guessed only when its text holds nothing but
   2-byte chars and a Japanese reading is clean (`_legacy_lookalike`).
7. Last resort: the best of utf-8 / cp932 / euc_jp with undecodable bytes replaced,
   accepted with `metadata["warning"]` only if at most 1 % of chars were replaced.
   Otherwise ReadError 「文字コードを判定できません」.

A file cut in the middle of a multi-byte char at its very end is read without that
partial char, with `metadata["warning"]` saying so.

Newlines: "\\r\\n" and "\\r" are normalized to "\\n" right after decoding. All offsets
(`body_start`, `Section.start`, `metadata["page_starts"]`) and line numbers therefore
point into the normalized-newline text, which is `Document.text`.

Known ambiguities (the bytes are valid both ways, nothing can tell them apart):
cp932 text made only of an even number of half-width katakana (ｱｲｳｴ) reads as
EUC-JP kanji; EUC-JP text of kanji only whose UTF-8 reading is plain Latin letters
("単" * 20 is "ñ" * 20) reads as UTF-8. A single full-width kana settles either case.

Every failure raises `ReadError(path, reason)` with a short Japanese reason and an
English gloss; a Document is returned whole or not at all.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from pipeline.documents import Document
from pipeline.errors import ReadError
from pipeline.ingest.readers import html, markdown, org, pdf, text
from pipeline.ingest.readers.base import Unreadable
from pipeline.ingest.readers.decode import BINARY, CONTROL, UNDECODABLE  # noqa: F401 (re-exported)
from pipeline.ingest.readers.html import HTML_NO_TEXT
from pipeline.ingest.readers.pdf import NOT_PDF, PDF_ENCRYPTED, PDF_NO_TEXT  # noqa: F401 (re-exported)

__all__ = ["SUPPORTED_SUFFIXES", "format_of", "read_document"]

_FORMAT_BY_SUFFIX = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".org": "org",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
SUPPORTED_SUFFIXES = frozenset(_FORMAT_BY_SUFFIX)
"""Suffixes a folder scan should pick up (lower case, with the dot). Files without a
suffix are also read, as plain text, when passed to `read_document` directly."""

_PARSERS = {
    "markdown": markdown.parse,
    "org": org.parse,
    "text": text.parse,
    "html": html.parse,
    "pdf": pdf.parse,
}

# Reasons shown to the user (ReadError.reason). Those of decoding and of one format are
# defined beside the code that gives them and imported above, so each is `readers.NAME`.
EMPTY = "空のファイルです (empty file)"
BLANK = "空白だけのファイルです (whitespace only)"
NO_BODY = "本文がありません (no body text)"
NOT_FOUND = "ファイルが見つかりません (file not found)"
NO_PERMISSION = "読み取り権限がありません (permission denied)"
SYMLINK_LOOP = "シンボリックリンクが循環しています (symlink loop)"
IS_DIRECTORY = "ディレクトリです (is a directory)"
NOT_REGULAR = "通常のファイルではありません (not a regular file)"


def format_of(path: str | os.PathLike) -> str | None:
    """The reader format for `path`'s suffix, "text" when it has none, None if unsupported."""
    suffix = Path(path).suffix.lower()
    if suffix == "":
        return "text"
    return _FORMAT_BY_SUFFIX.get(suffix)


def read_document(path: str | os.PathLike) -> Document:
    """Read one file into a Document, or raise ReadError saying why not.

    `Document.path` is `str(path)` as given (the scanner passes absolute paths),
    `content_hash` the sha256 of the raw bytes, `mtime` from the opened file's stat.
    """
    shown = str(path)
    p = Path(path)
    fmt = format_of(p)
    if fmt is None:
        raise ReadError(shown, f"対応していない形式です: {p.suffix} (unsupported file type)")
    raw, mtime = _read_bytes(p, shown)
    if not raw:
        raise ReadError(shown, EMPTY)
    try:
        parsed = _PARSERS[fmt](p, raw)
    except Unreadable as err:
        raise ReadError(shown, err.reason) from None
    if not parsed.text.strip():
        reason = {"html": HTML_NO_TEXT, "pdf": PDF_NO_TEXT}.get(fmt, BLANK if parsed.text else EMPTY)
        raise ReadError(shown, reason)
    if not parsed.text[parsed.body_start :].strip():
        raise ReadError(shown, NO_BODY)
    return Document(
        path=shown,
        text=parsed.text,
        title=parsed.title or p.stem or p.name,
        format=fmt,
        encoding=parsed.encoding,
        mtime=mtime,
        content_hash=hashlib.sha256(raw).hexdigest(),
        body_start=parsed.body_start,
        sections=parsed.sections,
        metadata=parsed.metadata,
    )


# --------------------------------------------------------------------------- I/O


def _read_bytes(path: Path, shown: str) -> tuple[bytes, float]:
    try:
        st = os.stat(path)  # follows symlinks: ELOOP surfaces here
        if stat.S_ISDIR(st.st_mode):
            raise ReadError(shown, IS_DIRECTORY)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block open()
            raise ReadError(shown, NOT_REGULAR)
        with open(path, "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime
            return f.read(), mtime
    except FileNotFoundError:
        raise ReadError(shown, NOT_FOUND) from None
    except PermissionError:
        raise ReadError(shown, NO_PERMISSION) from None
    except IsADirectoryError:
        raise ReadError(shown, IS_DIRECTORY) from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ReadError(shown, SYMLINK_LOOP) from None
        raise ReadError(shown, f"読み込めません (OS error: {err.strerror or err})") from None
