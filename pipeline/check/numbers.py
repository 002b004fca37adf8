"""Numbers, dates and quantities in Japanese text, normalized so that they can be compared.

A claim that says 13B where its source says 7B is wrong however many words it
shares with the source. The citation checker therefore pulls every quantity out
of the claim and of the cited text, normalizes both, and requires each quantity
of the claim to appear in the source.

Normalization (everything after NFKC, so full-width ``７Ｂ`` reads as ``7B``):

* Arabic numerals with thousands separators and decimals: ``7,000,000,000``, ``3.5``.
* Kanji numerals, positional or not: ``三十``, ``二千二十五``, ``二〇二五``, ``四``.
* Large-number multipliers: ``70億``, ``1.5万``, ``3億5000万``, ``7B``, ``13b``, ``2.5M``, ``10K``, ``1T``
  (``7B`` = ``70億`` = ``7,000,000,000``). ``4GB`` is 4 with the unit ``gb``, not 4 billion.
* Dates are split into their fields: ``2025年4月26日``, ``2025-04-26``, ``2025/4/26``,
  ``25/04/26`` (yy/mm/dd), ``<2025-03-11 Tue 08:28>`` and Japanese eras (``令和7年`` = 2025年,
  ``平成元年`` = 1989年) all give year / month / day quantities.
* Percentages and 割: ``50%`` = ``50％`` = ``50パーセント`` = ``5割``.
* Units and counters: measurement units (年, 月, 日, 時, 分, 秒, 円, %, 歳, 回, 倍, km, GB, …)
  must match exactly; counters of things (個, つ, 人, 匹, 頭, 台, 本, 枚, …) are compatible with
  each other (``４個`` = ``四つ``); a number without a unit matches any unit.

Everything here is pure Python on strings::

    >>> [q.value for q in extract_quantities("7Bモデルは70億パラメータ")]
    [7000000000.0, 7000000000.0]
    >>> quantities_match(extract_quantities("１３Ｂ")[0], extract_quantities("7B")[0])
    False
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = [
    "Quantity",
    "extract_quantities",
    "kanji_to_number",
    "quantities_match",
    "unmatched_quantities",
]


@dataclass(frozen=True)
class Quantity:
    """A number found in a text: its value, its (normalized) unit, and where it was."""

    value: float
    unit: str | None  # normalized unit or counter, None when bare
    surface: str  # the text it was read from (NFKC)
    start: int  # char offsets into the NFKC text
    end: int

    @property
    def kind(self) -> str:
        """'measure' (unit must match), 'count' (any counter matches) or 'bare'."""
        if self.unit is None:
            return "bare"
        return "count" if self.unit in COUNTERS else "measure"


_KANJI_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
                 "壱": 1, "弐": 2, "参": 3}
_KANJI_SMALL = {"十": 10, "百": 100, "千": 1000, "拾": 10}
_KANJI_LARGE = {"万": 10**4, "億": 10**8, "兆": 10**12, "京": 10**16}
_LATIN_MULT = {"k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "b": 10**9, "G": 10**9, "T": 10**12}

# Counters of things: any of them matches any other (４個 = 四つ, ２頭 = 二匹).
COUNTERS = frozenset(
    "個 つ 人 名 匹 頭 羽 台 本 枚 機 隻 両 冊 軒 棟 杯 着 足 粒 株 点 件 社 校 店 局 基 門 体 種 品 曲 話 部 巻 問 通 箇 ヶ所 か所 箇所".split()
)
# Units whose value must match with the same unit (ASCII units are lowercased).
MEASURES = frozenset(
    "年 月 日 時 分 秒 時間 か月 ヶ月 カ月 年間 世紀 年代 歳 才 円 ドル 元 ユーロ % 回 度 倍 位 番 号 階 章 節 条 行 "
    "文字 字 語 画素 ピクセル トークン 次元 層 ビット バイト percent "
    "km m cm mm kg g mg t l ml gb mb kb tb pb b bit bits byte bytes hz khz mhz ghz w kw v "
    "ms s sec min h hr fps dpi px ℃ °c 週".split()
)
_UNIT_ALIASES = {
    "パーセント": "%",
    "percent": "%",
    "才": "歳",
    "ヶ月": "か月",
    "カ月": "か月",
    "ヵ月": "か月",
    "箇所": "か所",
    "ヶ所": "か所",
    "キロメートル": "km",
    "メートル": "m",
    "センチメートル": "cm",
    "センチ": "cm",
    "ミリメートル": "mm",
    "キログラム": "kg",
    "グラム": "g",
    "トン": "t",
    "リットル": "l",
    "ギガバイト": "gb",
    "メガバイト": "mb",
    "キロバイト": "kb",
    "テラバイト": "tb",
    "ビット": "bit",
    "bits": "bit",
    "バイト": "byte",
    "bytes": "byte",
    "sec": "s",
    "hr": "h",
    "°c": "℃",
    "度c": "℃",
    "ミリ秒": "ms",
    "年間": "年",
    "日間": "日",
    "週間": "週",
}
# Longest first so that 時間 wins over 時, km over k.
_JA_UNITS = sorted(
    {u for u in COUNTERS | MEASURES if not u.isascii()} | {u for u in _UNIT_ALIASES if not u.isascii()},
    key=len,
    reverse=True,
)
_ASCII_UNITS = sorted({u for u in MEASURES if u.isascii()} | {u for u in _UNIT_ALIASES if u.isascii()}, key=len, reverse=True)

_ERAS = {"令和": 2018, "平成": 1988, "昭和": 1925, "大正": 1911, "明治": 1867}

# Words that start with a kanji numeral but are not numbers.
_KANJI_NUMBER_WORDS = (
    "一緒 一般 一部 一番 一方 一応 一旦 一気 一見 一斉 一体 一層 一生 一致 一定 一流 一環 一覧 一族 一種 一時 一員 "
    "一帯 一連 一切 一心 一面 一行 一同 一家 一律 一括 一貫 一転 一段 一向 一目 一言 一因 一助 一端 一例 一手 一服 "
    "一瞬 一刻 一際 一挙 一新 一掃 一筋 一途 一息 一口 一通り 一人一人 一人ひとり 唯一 統一 同一 均一 画一 単一 随一 "
    "万一 万が一 十分 十二分 充分 二度と 四季 四方 八方 千差万別 百科 万年筆 万能 万全 万歳 三味線 七夕 十字 一人称 二人称 三人称"
).split()
_NON_NUMBER_AFTER = re.compile("|".join(sorted(map(re.escape, _KANJI_NUMBER_WORDS), key=len, reverse=True)))

_DIGITS = r"\d+(?:,\d{3})*(?:\.\d+)?"
_KANJI_NUM_CHARS = "〇零一二三四五六七八九十百千万億兆壱弐参拾"
_KANJI_RUN = f"[{_KANJI_NUM_CHARS}]+"

# Dates first: they consume their numbers so the fields are read once.
_DATE_ISO = re.compile(r"(?<![\d.])(\d{4}|\d{2})([-/.])(\d{1,2})\2(\d{1,2})(?![\d])")
_DATE_MD = re.compile(r"(?<![\d./-])(\d{1,2})/(\d{1,2})(?![\d/])")
_ERA = re.compile(r"(令和|平成|昭和|大正|明治)\s*(元|\d{1,2}|[一二三四五六七八九十]+)\s*年")
_TIME = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![\d:])")
_WARI = re.compile(r"(\d+(?:\.\d+)?|[一二三四五六七八九十])\s*割(?:\s*(\d|[一二三四五六七八九])\s*分)?")
# A number: arabic (with an optional kanji/latin multiplier chain) or a kanji run.
_ARABIC = re.compile(
    rf"(?<![A-Za-z0-9.])({_DIGITS})((?:\s?[万億兆京]\s?(?:{_DIGITS})?)*)(?:\s?([kKMBbGT])(?![A-Za-z]))?",
)
_KANJI = re.compile(rf"(第)?({_KANJI_RUN})")
_UNIT_AFTER = re.compile(
    r"\s?(" + "|".join(map(re.escape, _JA_UNITS)) + r"|(?:" + "|".join(map(re.escape, _ASCII_UNITS)) + r")(?![A-Za-z]))",
    re.IGNORECASE,
)


def kanji_to_number(s: str) -> float | None:
    """Value of a kanji numeral: ``三十`` -> 30, ``二千二十五`` -> 2025, ``二〇二五`` -> 2025."""
    if not s or any(c not in _KANJI_NUM_CHARS for c in s):
        return None
    if all(c in _KANJI_DIGITS for c in s):  # digit by digit: 二〇二五
        v = 0
        for c in s:
            v = v * 10 + _KANJI_DIGITS[c]
        return float(v)
    total = 0
    section = 0  # below 万
    digit: int | None = None
    for c in s:
        if c in _KANJI_DIGITS:
            digit = (digit or 0) * 10 + _KANJI_DIGITS[c] if digit is not None else _KANJI_DIGITS[c]
        elif c in _KANJI_SMALL:
            section += (digit if digit is not None else 1) * _KANJI_SMALL[c]
            digit = None
        elif c in _KANJI_LARGE:
            section += digit or 0
            total += (section or 1) * _KANJI_LARGE[c]
            section, digit = 0, None
    return float(total + section + (digit or 0))


def _arabic(s: str) -> float:
    return float(s.replace(",", ""))


def _arabic_with_multipliers(head: str, chain: str, latin: str | None) -> float:
    """``3`` + ``億5000万`` -> 350,000,000; ``7`` + latin ``B`` -> 7e9."""
    value = _arabic(head)
    if chain:
        parts = re.findall(rf"([万億兆京])\s?({_DIGITS})?", chain)
        total = 0.0
        current = value
        for mult, nxt in parts:
            total += current * _KANJI_LARGE[mult]
            current = _arabic(nxt) if nxt else 0.0
        value = total + current
    if latin:
        value *= _LATIN_MULT[latin]
    return value


def _unit_at(text: str, pos: int) -> tuple[str | None, int]:
    m = _UNIT_AFTER.match(text, pos)
    if not m:
        return None, pos
    unit = m.group(1)
    key = unit.lower() if unit.isascii() else unit
    return _UNIT_ALIASES.get(key, key), m.end()


def _year2(y: int) -> int:
    return 2000 + y if y < 70 else 1900 + y


def extract_quantities(text: str) -> list[Quantity]:
    """Every number, date field and quantity in `text` (NFKC-normalized first), in order."""
    t = unicodedata.normalize("NFKC", text)
    taken = [False] * len(t)
    out: list[Quantity] = []

    def free(s: int, e: int) -> bool:
        return not any(taken[s:e])

    def add(value: float, unit: str | None, s: int, e: int) -> None:
        out.append(Quantity(float(value), unit, t[s:e], s, e))

    def take(s: int, e: int) -> None:
        for k in range(s, e):
            taken[k] = True

    for m in _ERA.finditer(t):
        n = m.group(2)
        y = 1 if n == "元" else int(n) if n.isdigit() else int(kanji_to_number(n) or 0)
        add(_ERAS[m.group(1)] + y, "年", m.start(), m.end())
        take(m.start(), m.end())
    for m in _DATE_ISO.finditer(t):
        y, mo, d = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if m.group(2) == "." and len(m.group(1)) == 2:
            continue  # 12.5.3 is a version, not a date
        if not (1 <= mo <= 12 and 1 <= d <= 31) or not free(m.start(), m.end()):
            continue
        year = y if len(m.group(1)) == 4 else _year2(y)
        add(year, "年", m.start(1), m.end(1))
        add(mo, "月", m.start(3), m.end(3))
        add(d, "日", m.start(4), m.end(4))
        take(m.start(), m.end())
    for m in _TIME.finditer(t):
        h, mi = int(m.group(1)), int(m.group(2))
        if h > 24 or mi > 59 or not free(m.start(), m.end()):
            continue
        add(h, "時", m.start(1), m.end(1))
        add(mi, "分", m.start(2), m.end(2))
        take(m.start(), m.end())
    for m in _DATE_MD.finditer(t):
        mo, d = int(m.group(1)), int(m.group(2))
        if 1 <= mo <= 12 and 1 <= d <= 31 and free(m.start(), m.end()):
            add(mo, "月", m.start(1), m.end(1))
            add(d, "日", m.start(2), m.end(2))
            take(m.start(), m.end())
    for m in _WARI.finditer(t):
        if not free(m.start(), m.end()):
            continue
        a = m.group(1)
        v = float(a) if a[0].isdigit() else kanji_to_number(a) or 0.0
        if m.group(2):
            b = m.group(2)
            v += (float(b) if b.isdigit() else kanji_to_number(b) or 0.0) / 10
        add(v * 10, "%", m.start(), m.end())
        take(m.start(), m.end())
    for m in _ARABIC.finditer(t):
        if not free(m.start(), m.end()):
            continue
        head, chain, latin = m.group(1), m.group(2), m.group(3)
        end = m.end()
        if latin:
            # 4GB: G is the unit's prefix, not a multiplier; 7B: billion.
            unit, uend = _unit_at(t, m.start() + len(head) + len(chain))
            if unit is not None and uend > end:
                latin, end = None, m.start() + len(head) + len(chain)
        value = _arabic_with_multipliers(head, chain.strip() if chain else "", latin)
        unit, uend = _unit_at(t, end if not latin else end)
        add(value, unit, m.start(), uend if unit else end)
        take(m.start(), uend if unit else end)
    for m in _KANJI.finditer(t):
        s, e = m.start(2), m.end(2)
        if not free(s, e):
            continue
        word = _NON_NUMBER_AFTER.match(t, s)
        if word:
            continue
        run = m.group(2)
        # A lone 万/億/千... is not a number; 一/二 alone only before a unit or after 第.
        if all(c in _KANJI_LARGE or c in _KANJI_SMALL for c in run) and run not in ("十", "百", "千"):
            continue
        value = kanji_to_number(run)
        if value is None:
            continue
        unit, uend = _unit_at(t, e)
        if len(run) == 1 and unit is None and not m.group(1):
            continue
        add(value, unit, m.start(), uend if unit else e)
        take(m.start(), uend if unit else e)
    out.sort(key=lambda q: q.start)
    return out


def quantities_match(a: Quantity, b: Quantity) -> bool:
    """Same value (to float precision) with compatible units."""
    if abs(a.value - b.value) > 1e-9 * max(1.0, abs(a.value), abs(b.value)):
        return False
    if a.unit is None or b.unit is None or a.unit == b.unit:
        return True
    return a.kind == "count" and b.kind == "count"


def unmatched_quantities(claim: Sequence[Quantity], source: Iterable[Quantity]) -> list[Quantity]:
    """The quantities of `claim` that no quantity of `source` matches."""
    src = list(source)
    return [q for q in claim if not any(quantities_match(q, s) for s in src)]
