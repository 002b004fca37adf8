"""Reading one file into a `Document`: bytes -> text -> title, sections, metadata.

    read_document(path) -> Document      dispatch on the suffix (SUPPORTED_SUFFIXES)
    format_of(path) -> str | None        "markdown" | "org" | "text" | "html" | "pdf"

Formats, by suffix (case-insensitive):

    .md .markdown   markdown   YAML front matter, ATX headings (# … ######)
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

import codecs
import errno
import hashlib
import io
import os
import re
import stat
from datetime import date, datetime
from pathlib import Path
from typing import NamedTuple

from pipeline.documents import Document, Section
from pipeline.errors import ReadError

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

BINARY_SNIFF_BYTES = 8192  # NUL bytes in this many leading bytes mean "binary"
MAX_REPLACED_SHARE = 0.01  # last-resort decoding: at most this share of chars replaced
MAX_BAD_SHARE = 0.05  # a legacy decoding with more control/private-use chars is rejected
MAX_CONTROL_SHARE = 0.10  # a UTF-8 decoding with more control chars is binary
TRUNCATION_MISFIT = 10  # a reading that needs its last bytes dropped counts as this many odd chars
TEXT_TITLE_MAX = 60  # a first line at least this long is not taken as a title

# Reasons shown to the user (ReadError.reason).
EMPTY = "空のファイルです (empty file)"
BLANK = "空白だけのファイルです (whitespace only)"
NO_BODY = "本文がありません (no body text)"
BINARY = "バイナリファイルのようです (NULバイトを含む / contains NUL bytes)"
CONTROL = "バイナリファイルのようです (制御文字が多い / mostly control characters)"
UNDECODABLE = "文字コードを判定できません (cannot detect the encoding)"
NOT_FOUND = "ファイルが見つかりません (file not found)"
NO_PERMISSION = "読み取り権限がありません (permission denied)"
SYMLINK_LOOP = "シンボリックリンクが循環しています (symlink loop)"
IS_DIRECTORY = "ディレクトリです (is a directory)"
NOT_REGULAR = "通常のファイルではありません (not a regular file)"
NOT_PDF = "PDFファイルではありません (no %PDF header)"
PDF_ENCRYPTED = "暗号化されたPDFです (encrypted PDF)"
PDF_NO_TEXT = "PDFからテキストを抽出できません (no extractable text; scanned PDF?)"
HTML_NO_TEXT = "表示されるテキストがありません (no visible text)"


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
    except _Unreadable as err:
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


class _Unreadable(Exception):
    """Raised inside this module; read_document turns it into ReadError(path, reason)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Parsed(NamedTuple):
    text: str
    title: str
    encoding: str
    body_start: int
    sections: tuple[Section, ...]
    metadata: dict


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


# ---------------------------------------------------------------------- decoding

# Chars a Japanese document is made of: ASCII, Latin-1/Latin Extended, Greek and
# Cyrillic (all in JIS X 0208/0212), general punctuation, letterlike symbols, number
# forms, arrows, math, circled numbers, box drawing, shapes, misc symbols, CJK
# punctuation, kana, CJK ideographs, fullwidth forms. Half-width katakana (U+FF61–FF9F)
# is legal but is what EUC-JP bytes become when misread as cp932, so it is counted
# apart as "suspicious". Anything else (controls, private use, U+FFFD…) is "bad".
_JAPANESE_OK = (
    "\t\n\r\f\x20-\x7e"
    "\u00a0-\u024f\u0370-\u03ff\u0400-\u04ff"
    "\u2010-\u206f\u2100-\u218f\u2190-\u22ff\u2300-\u23ff\u2460-\u24ff"
    "\u2500-\u27bf\u3000-\u30ff\u31f0-\u31ff\u3200-\u33ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\ufe30-\ufe4f\uff01-\uff60\uffe0-\uffef"
)
_HALFWIDTH_KANA = "\uff61-\uff9f"
_BAD_CHAR = re.compile(f"[^{_JAPANESE_OK}{_HALFWIDTH_KANA}]")
_SUSPICIOUS_CHAR = re.compile(f"[{_HALFWIDTH_KANA}]")
_CONTROL_CHAR = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f-\x9f]")

_SJIS_LABELS = {
    "shift_jis", "shift-jis", "sjis", "s_jis", "x-sjis", "ms_kanji", "csshiftjis",
    "windows-31j", "cp932", "ms932", "mskanji",
}  # fmt: skip
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)


class _Decoded(NamedTuple):
    text: str  # newlines normalized
    encoding: str  # Python codec name
    warning: str | None = None


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _strict(data: bytes, encoding: str) -> tuple[str, bool] | None:
    """Strict decode; tolerate only a partial multi-byte char at the very end.

    Returns (text, truncated) or None when the bytes are not valid `encoding`.
    """
    try:
        return data.decode(encoding), False
    except UnicodeDecodeError as err:
        at_end = err.start > 0 and len(data) - err.start < 4 and err.end == len(data)
        if at_end and err.reason in ("unexpected end of data", "incomplete multibyte sequence"):
            try:
                return data[: err.start].decode(encoding), True
            except UnicodeDecodeError:
                return None
        return None
    except LookupError:
        return None


def _codec_for_label(label: str) -> str | None:
    """Python codec name for a charset label from HTML, mapping Shift_JIS to cp932."""
    label = label.strip().lower()
    if label in _SJIS_LABELS:
        return "cp932"
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return "cp932" if name == "shift_jis" else name


def _declared_charset(data: bytes) -> str | None:
    m = _META_CHARSET.search(data[:4096])
    return _codec_for_label(m.group(1).decode("ascii", "replace")) if m else None


def _truncation_warning(encoding: str) -> str:
    return (
        "ファイル末尾の不完全な文字を削除しました "
        f"(truncated {encoding} sequence at end of file dropped)"
    )


def _japanese_misfit(text: str) -> int:
    """How many chars fall outside the Japanese/ASCII repertoire (suspicious + bad)."""
    return len(_BAD_CHAR.findall(text)) + len(_SUSPICIOUS_CHAR.findall(text))


def _charset_normalizer_pick(data: bytes, candidates: list[str]) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - charset-normalizer is a dependency
        return None
    best = from_bytes(data, cp_isolation=candidates).best()
    if best is None:
        return None
    name = _codec_for_label(best.encoding)
    return name if name in candidates else None


def _decode(data: bytes, declared: str | None = None) -> _Decoded:
    """Bytes of a text file -> _Decoded, or raise _Unreadable. See the module docstring."""
    if data.startswith(codecs.BOM_UTF8):
        got = _strict(data[len(codecs.BOM_UTF8) :], "utf-8")
        if got is None:
            return _decode_lossy(data[len(codecs.BOM_UTF8) :], ["utf-8"], "utf-8-sig")
        text, truncated = got
        return _Decoded(
            _normalize_newlines(text), "utf-8-sig", _truncation_warning("utf-8") if truncated else None
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        got = _strict(data, "utf-16")
        if got is None:
            raise _Unreadable(UNDECODABLE)
        text, truncated = got
        return _Decoded(
            _normalize_newlines(text), "utf-16", _truncation_warning("utf-16") if truncated else None
        )
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise _Unreadable(BINARY)

    if re.search(rb"\x1b\$[@B]|\x1b\(J", data) and max(data) < 0x80:
        got = _strict(data, "iso2022_jp")
        if got is not None and not got[1]:
            return _Decoded(_normalize_newlines(got[0]), "iso2022_jp")

    got = _strict(data, "utf-8")
    if got is not None:
        text, truncated = got
        if len(_CONTROL_CHAR.findall(text)) > MAX_CONTROL_SHARE * max(len(text), 1):
            raise _Unreadable(CONTROL)
        legacy = _legacy_lookalike(data, text)
        if legacy is not None:
            return legacy
        return _Decoded(
            _normalize_newlines(text), "utf-8", _truncation_warning("utf-8") if truncated else None
        )

    if declared and declared not in ("utf-8", "utf-16", "cp932", "euc_jp"):
        got = _strict(data, declared)
        if got is not None and not _CONTROL_CHAR.search(got[0]):
            text, truncated = got
            return _Decoded(
                _normalize_newlines(text), declared, _truncation_warning(declared) if truncated else None
            )

    legacy = ["cp932", "euc_jp"]
    if declared in legacy:  # the declared one wins a tie
        legacy.remove(declared)
        legacy.insert(0, declared)
    readings = {enc: got for enc in legacy if (got := _strict(data, enc)) is not None}
    if readings:
        misfit = {
            enc: _japanese_misfit(text) + TRUNCATION_MISFIT * truncated
            for enc, (text, truncated) in readings.items()
        }
        pick = None
        if len(readings) > 1:
            pick = _charset_normalizer_pick(data, list(readings))
        fewest = min(misfit.values())
        if pick is None or misfit[pick] > fewest:
            pick = next(enc for enc in readings if misfit[enc] == fewest)
        text, truncated = readings[pick]
        if len(_BAD_CHAR.findall(text)) <= MAX_BAD_SHARE * max(len(text), 1):
            return _Decoded(
                _normalize_newlines(text), pick, _truncation_warning(pick) if truncated else None
            )

    return _decode_lossy(data, ["utf-8", "cp932", "euc_jp"])


_TWO_BYTE_UTF8_ONLY = re.compile("[\u0080-\u07ff]")
_KANA_OR_KANJI = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")
# IPA, spacing modifier letters, lone combining marks: rare in notes, and what EUC-JP
# kanji turn into when read as UTF-8 (文 -> "ʸ").
_IPA_OR_MODIFIER = re.compile("[\u0250-\u036f]")


def _legacy_lookalike(data: bytes, utf8_text: str) -> _Decoded | None:
    """EUC-JP kanji whose bytes fall in C2–DF A1–BF are also valid 2-byte UTF-8
    (文 = C5 B8 reads as "ʸ"). When the UTF-8 reading holds only such 2-byte chars
    and a Japanese reading is clean, charset-normalizer arbitrates among them, and
    IPA/modifier letters in the UTF-8 reading tip it to the Japanese one. Text that
    reads as plain Latin letters either way ("単" * 20 is "ñ" * 20) stays UTF-8."""
    if not _TWO_BYTE_UTF8_ONLY.search(utf8_text) or max(map(ord, utf8_text)) >= 0x800:
        return None
    clean = {}
    for enc in ("euc_jp", "cp932"):
        got = _strict(data, enc)
        if got is not None and not got[1] and _japanese_misfit(got[0]) == 0 and _KANA_OR_KANJI.search(got[0]):
            clean[enc] = got[0]
    if not clean:
        return None
    pick = _charset_normalizer_pick(data, ["utf-8", *clean])
    if pick not in clean and _IPA_OR_MODIFIER.search(utf8_text):
        pick = next(iter(clean))
    if pick in clean:
        return _Decoded(_normalize_newlines(clean[pick]), pick)
    return None


def _decode_lossy(data: bytes, encodings: list[str], name: str | None = None) -> _Decoded:
    """Replace undecodable bytes if they are few; otherwise _Unreadable."""
    best: tuple[int, int, str, str] | None = None
    for enc in encodings:
        text = data.decode(enc, errors="replace")
        key = (text.count("\ufffd"), len(_BAD_CHAR.findall(text)), enc, text)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    replaced, bad, enc, text = best
    size = max(len(text), 1)
    if replaced > MAX_REPLACED_SHARE * size or bad - replaced > MAX_BAD_SHARE * size:
        raise _Unreadable(UNDECODABLE)
    warning = (
        f"読めないバイトを{replaced}か所 U+FFFD に置き換えました "
        f"(replaced {replaced} undecodable byte sequences)"
    )
    return _Decoded(_normalize_newlines(text), name or enc, warning)


def _warn(metadata: dict, warning: str | None) -> None:
    if warning:
        metadata["warning"] = f"{metadata['warning']}; {warning}" if "warning" in metadata else warning


# ------------------------------------------------------------ shared structure


def _line_starts(text: str):
    """Yield (offset, line) for each line of `text` (without its newline)."""
    pos = 0
    for line in text.split("\n"):
        yield pos, line
        pos += len(line) + 1


def _nested_sections(headings: list[tuple[int, int, str]]) -> tuple[Section, ...]:
    """(start, level, text) in document order -> Sections whose path nests by level."""
    stack: list[tuple[int, str]] = []
    sections = []
    for start, level, title in headings:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        sections.append(Section(start=start, path=tuple(t for _, t in stack)))
    return tuple(sections)


_DAY = r"[^\s\d>\]]+"  # Tue, 火, Di. …
_TIMESTAMP = re.compile(
    rf"[<\[](\d{{4}})-(\d{{2}})-(\d{{2}})(?:\s+{_DAY})?(?:\s+(\d{{1,2}}):(\d{{2}})(?:-\d{{1,2}}:\d{{2}})?)?"
    r"(?:\s+[.+\-]{1,2}\d+[hdwmy](?:/\d+[hdwmy])?)*\s*[>\]]"
)


def _timestamps(text: str) -> list[str]:
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


def _add_timestamps(metadata: dict, text: str) -> None:
    stamps = _timestamps(text)
    if stamps:
        metadata["timestamps"] = stamps


# ------------------------------------------------------------------- Markdown

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FM_KEY = re.compile(r"^([^\s#:\-][^:]*?)\s*:(?:[ \t]+(.*))?$")
_FM_ITEM = re.compile(r"^\s+-[ \t]+(.*)$|^-[ \t]+(.*)$")


def _closes_fence(line: str, marker: str, opening: str) -> bool:
    """A closing fence: same char, at least as long, nothing after it."""
    return marker[0] == opening[0] and len(marker) >= len(opening) and not line.strip()[len(marker) :]


def _yaml_scalar(value: str):
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        return [v for v in (_yaml_scalar(x) for x in value[1:-1].split(",")) if v != ""]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if " #" in value:  # trailing comment
        value = value.split(" #", 1)[0].rstrip()
    return value


def _front_matter(text: str) -> tuple[dict, int] | None:
    """Simple YAML front matter: `key: value`, `key: [a, b]`, and `- item` lists.

    Returns (mapping, body_start) or None when the text has no closed front matter.
    Nested mappings and multi-line scalars are skipped, not parsed.
    """
    lines = list(_line_starts(text))
    if not lines or lines[0][1].rstrip() != "---":
        return None
    for i in range(1, len(lines)):
        if lines[i][1].rstrip() in ("---", "..."):
            end = i
            break
    else:
        return None
    meta: dict = {}
    key = None
    for _, line in lines[1:end]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        item = _FM_ITEM.match(line)
        if item and key is not None:
            if not isinstance(meta.get(key), list):
                meta[key] = []
            meta[key].append(_yaml_scalar(item.group(1) or item.group(2) or ""))
            continue
        m = _FM_KEY.match(line)
        if m:
            key = m.group(1).strip().strip("'\"")
            meta[key] = _yaml_scalar(m.group(2) or "")
        elif not line[0].isspace():
            key = None
    body_start = min(lines[end][0] + len(lines[end][1]) + 1, len(text))
    return meta, body_start


def _as_tags(value) -> list[str]:
    items = value if isinstance(value, list) else re.split(r"[,\s]+", str(value))
    return [str(t).strip().lstrip("#") for t in items if str(t).strip().lstrip("#")]


def _parse_markdown(path: Path, raw: bytes) -> _Parsed:
    decoded = _decode(raw)
    text = decoded.text
    metadata: dict = {}
    body_start = 0
    fm = _front_matter(text)
    if fm is not None:
        front, body_start = fm
        metadata.update(front)
        if "tags" in front:
            metadata["tags"] = _as_tags(front["tags"])
    headings = []
    fence: str | None = None
    for start, line in _line_starts(text[body_start:]):
        f = _FENCE.match(line)
        if fence is not None:
            if f and _closes_fence(line, f.group(1), fence):
                fence = None
            continue
        if f:
            fence = f.group(1)
            continue
        m = _ATX.match(line)
        if m and (m.group(2) or "").strip():
            headings.append((body_start + start, len(m.group(1)), m.group(2).strip()))
    title = str(metadata.get("title") or "").strip()
    if not title:
        title = next((t for _, level, t in headings if level == 1), "")
    _add_timestamps(metadata, text[body_start:])
    _warn(metadata, decoded.warning)
    return _Parsed(text, title, decoded.encoding, body_start, _nested_sections(headings), metadata)


# ------------------------------------------------------------------ org-mode

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
    for start, line in _line_starts(text):
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


def _parse_org(path: Path, raw: bytes) -> _Parsed:
    decoded = _decode(raw)
    text = decoded.text
    metadata, body_start = _org_header(text)
    if "filetags" in metadata:
        metadata["tags"] = [t for t in re.split(r"[:\s]+", metadata["filetags"]) if t]
    todo = _org_todo_keywords(metadata)
    headings = []
    for start, line in _line_starts(text[body_start:]):
        m = _ORG_HEADING.match(line)
        if m:
            heading = _org_heading_text(m.group(2), todo)
            if heading:
                headings.append((body_start + start, len(m.group(1)), heading))
    title = str(metadata.get("title", "")).strip()
    if not title:
        title = next((t for _, level, t in headings if level == 1), "")
    _add_timestamps(metadata, text)
    _warn(metadata, decoded.warning)
    return _Parsed(text, title, decoded.encoding, body_start, _nested_sections(headings), metadata)


# ------------------------------------------------------------ plain text

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


def _parse_text(path: Path, raw: bytes) -> _Parsed:
    decoded = _decode(raw)
    text = decoded.text
    sections = tuple(
        Section(start=start, path=(heading,))
        for start, line in _line_starts(text)
        if (heading := _emoji_heading(line)) is not None
    )
    metadata: dict = {}
    _add_timestamps(metadata, text)
    _warn(metadata, decoded.warning)
    return _Parsed(text, _text_title(text), decoded.encoding, 0, sections, metadata)


# ------------------------------------------------------------------- HTML

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
            s = _normalize_newlines(child.get_text()).strip("\n")
            if s.strip():
                blocks.append((s, None))
        else:
            if name in _HTML_BLOCKS:
                flush()
            stack.append((child, iter(child.children)))
    flush()
    return blocks


def _parse_html(path: Path, raw: bytes) -> _Parsed:
    from bs4 import BeautifulSoup, Comment

    decoded = _decode(raw, declared=_declared_charset(raw))
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
        title = next((t for _, level, t in headings if level == 1), "")
    _warn(metadata, decoded.warning)
    return _Parsed(text, title, decoded.encoding, 0, _nested_sections(headings), metadata)


# -------------------------------------------------------------------- PDF

PDF_PAGE_SEPARATOR = "\n\n"


def _parse_pdf(path: Path, raw: bytes) -> _Parsed:
    if b"%PDF-" not in raw[:1024]:
        raise _Unreadable(NOT_PDF)
    try:
        import pypdf

        reader = pypdf.PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception:
                ok = 0
            if not ok:
                raise _Unreadable(PDF_ENCRYPTED)
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = str(info.title or "").strip() if info is not None else ""
    except _Unreadable:
        raise
    except Exception as err:  # pypdf raises many kinds on malformed files
        raise _Unreadable(f"PDFを読み込めません ({type(err).__name__}: {err})") from err
    page_starts = []
    parts = []
    pos = 0
    for page in pages:
        page = _normalize_newlines(page).replace("\x00", "").strip()
        page_starts.append(pos)
        parts.append(page)
        pos += len(page) + len(PDF_PAGE_SEPARATOR)
    text = PDF_PAGE_SEPARATOR.join(parts)
    if not text.strip():
        raise _Unreadable(PDF_NO_TEXT)
    metadata = {"page_starts": page_starts, "pages": len(pages)}
    return _Parsed(text, title, "", 0, (), metadata)


_PARSERS = {
    "markdown": _parse_markdown,
    "org": _parse_org,
    "text": _parse_text,
    "html": _parse_html,
    "pdf": _parse_pdf,
}
