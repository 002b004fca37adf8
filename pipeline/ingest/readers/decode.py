"""Bytes of a text file -> str: BOM, binary sniffing, UTF-8, Japanese legacy encodings.

    decode(data, declared=None) -> Decoded     text (newlines normalized), codec, warning

The order of the steps, and the known ambiguities, are in the package docstring
(`pipeline.ingest.readers`). Refusals raise `Unreadable(BINARY | CONTROL | UNDECODABLE)`.
"""

from __future__ import annotations

import codecs
import re
from typing import NamedTuple

from pipeline.ingest.readers.base import Unreadable

BINARY_SNIFF_BYTES = 8192  # NUL bytes in this many leading bytes mean "binary"
MAX_REPLACED_SHARE = 0.01  # last-resort decoding: at most this share of chars replaced
MAX_BAD_SHARE = 0.05  # a legacy decoding with more control/private-use chars is rejected
MAX_CONTROL_SHARE = 0.10  # a UTF-8 decoding with more control chars is binary
TRUNCATION_MISFIT = 10  # a reading that needs its last bytes dropped counts as this many odd chars

BINARY = "バイナリファイルのようです (NULバイトを含む / contains NUL bytes)"
CONTROL = "バイナリファイルのようです (制御文字が多い / mostly control characters)"
UNDECODABLE = "文字コードを判定できません (cannot detect the encoding)"


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


class Decoded(NamedTuple):
    text: str  # newlines normalized
    encoding: str  # Python codec name
    warning: str | None = None


def normalize_newlines(text: str) -> str:
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


def declared_charset(data: bytes) -> str | None:
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


def decode(data: bytes, declared: str | None = None) -> Decoded:
    """Bytes of a text file -> Decoded, or raise Unreadable. See the module docstring."""
    if data.startswith(codecs.BOM_UTF8):
        got = _strict(data[len(codecs.BOM_UTF8) :], "utf-8")
        if got is None:
            return _decode_lossy(data[len(codecs.BOM_UTF8) :], ["utf-8"], "utf-8-sig")
        text, truncated = got
        return Decoded(
            normalize_newlines(text), "utf-8-sig", _truncation_warning("utf-8") if truncated else None
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        got = _strict(data, "utf-16")
        if got is None:
            raise Unreadable(UNDECODABLE)
        text, truncated = got
        return Decoded(
            normalize_newlines(text), "utf-16", _truncation_warning("utf-16") if truncated else None
        )
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise Unreadable(BINARY)

    if re.search(rb"\x1b\$[@B]|\x1b\(J", data) and max(data) < 0x80:
        got = _strict(data, "iso2022_jp")
        if got is not None and not got[1]:
            return Decoded(normalize_newlines(got[0]), "iso2022_jp")

    got = _strict(data, "utf-8")
    if got is not None:
        text, truncated = got
        if len(_CONTROL_CHAR.findall(text)) > MAX_CONTROL_SHARE * max(len(text), 1):
            raise Unreadable(CONTROL)
        legacy = _legacy_lookalike(data, text)
        if legacy is not None:
            return legacy
        return Decoded(
            normalize_newlines(text), "utf-8", _truncation_warning("utf-8") if truncated else None
        )

    if declared and declared not in ("utf-8", "utf-16", "cp932", "euc_jp"):
        got = _strict(data, declared)
        if got is not None and not _CONTROL_CHAR.search(got[0]):
            text, truncated = got
            return Decoded(
                normalize_newlines(text), declared, _truncation_warning(declared) if truncated else None
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
            return Decoded(
                normalize_newlines(text), pick, _truncation_warning(pick) if truncated else None
            )

    return _decode_lossy(data, ["utf-8", "cp932", "euc_jp"])


_TWO_BYTE_UTF8_ONLY = re.compile("[\u0080-\u07ff]")
_KANA_OR_KANJI = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")
# IPA, spacing modifier letters, lone combining marks: rare in notes, and what EUC-JP
# kanji turn into when read as UTF-8 (文 -> "ʸ").
_IPA_OR_MODIFIER = re.compile("[\u0250-\u036f]")


def _legacy_lookalike(data: bytes, utf8_text: str) -> Decoded | None:
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
        return Decoded(normalize_newlines(clean[pick]), pick)
    return None


def _decode_lossy(data: bytes, encodings: list[str], name: str | None = None) -> Decoded:
    """Replace undecodable bytes if they are few; otherwise Unreadable."""
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
        raise Unreadable(UNDECODABLE)
    warning = (
        f"読めないバイトを{replaced}か所 U+FFFD に置き換えました "
        f"(replaced {replaced} undecodable byte sequences)"
    )
    return Decoded(normalize_newlines(text), name or enc, warning)

