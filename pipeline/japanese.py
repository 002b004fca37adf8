"""The Japanese text layer: NFKC with an offset map, sentences, morphemes, lemmas.

Everything here is a function of values. Two halves:

* Pure Python, no MeCab: `normalize` (NFKC plus a map back to the original
  characters) and `split_sentences` (character scanning with bracket tracking).
* MeCab through fugashi + unidic-lite, held by an `Analyzer` object:
  morphemes with char offsets, content-word lemmas for BM25 and the citation
  checker, token counts, morpheme boundaries for the chunker.

fugashi is imported inside `Analyzer.__init__`, never at module top, so
``import pipeline.japanese`` stays cheap. `default_analyzer()` is the one
process-wide cache (one tagger per process).

    >>> from pipeline.japanese import default_analyzer, split_sentences
    >>> text = "幻覚. 人工知能が誤った情報を示す応答."
    >>> [text[s:e] for s, e in split_sentences(text)]
    ['幻覚.', '人工知能が誤った情報を示す応答.']
    >>> default_analyzer().content_lemmas("走った。書かれた本。")
    ['走る', '書く', '本']
"""

from __future__ import annotations

import bisect
import csv
import functools
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLOSE_TO_OPEN",
    "CONTENT_POS",
    "DROPPED_POS2",
    "OPEN_TO_CLOSE",
    "QUOTE_LOOKAHEAD",
    "STOP_LEMMAS",
    "Analyzer",
    "Morpheme",
    "Normalized",
    "default_analyzer",
    "normalize",
    "split_sentences",
]


# --------------------------------------------------------------------------
# NFKC with an offset map
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalized:
    """NFKC of a text, with a map back to the characters it came from.

    `offsets[i]` is the index in the original text of the character that
    normalized character `i` came from; `ends[i]` is the (exclusive) end of the
    original unit it came from. A unit is usually one character; it is longer
    when characters normalize together (``ｶﾞ`` -> ``ガ``, a base letter and its
    combining marks). One unit may also expand (``㍻`` -> ``平成``): then every
    character of the expansion points at the same original character.
    """

    text: str
    offsets: tuple[int, ...]
    ends: tuple[int, ...]
    source_length: int

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Original span (end exclusive) of the normalized span `[start, end)`."""
        n = len(self.text)
        if not 0 <= start <= end <= n:
            raise ValueError(f"span ({start}, {end}) is outside 0..{n}")
        if start == end:
            pos = self.offsets[start] if start < n else self.source_length
            return pos, pos
        return self.offsets[start], self.ends[end - 1]


def _nfkc(s: str) -> str:
    return unicodedata.normalize("NFKC", s)


# Half-width (semi-)voiced sound marks: NFKC merges them into the previous kana.
_HALFWIDTH_VOICING = frozenset("\uff9e\uff9f")


def _unit_spans(s: str) -> list[tuple[int, int, str]]:
    """Split `s` into units that NFKC-normalize independently: (start, end, nfkc)."""
    units: list[tuple[int, int, str]] = []
    if not s:
        return units
    start, norm = 0, _nfkc(s[0])
    for j in range(1, len(s)):
        c = s[j]
        c_norm = _nfkc(c)
        joined = unicodedata.combining(c) or c in _HALFWIDTH_VOICING
        if not joined:
            # Catch any other interaction (Hangul jamo, composing starters).
            whole = _nfkc(s[start : j + 1])
            joined = whole != norm + c_norm
        if joined:
            norm = _nfkc(s[start : j + 1])
            continue
        units.append((start, j, norm))
        start, norm = j, c_norm
    units.append((start, len(s), norm))
    return units


def normalize(text: str) -> Normalized:
    """NFKC-normalize `text`, keeping where each character came from.

    ``normalize(t).text == unicodedata.normalize("NFKC", t)`` always holds.
    """
    n = len(text)
    if unicodedata.is_normalized("NFKC", text):
        return Normalized(text, tuple(range(n)), tuple(range(1, n + 1)), n)
    expected = _nfkc(text)
    parts: list[str] = []
    offsets: list[int] = []
    ends: list[int] = []
    base = 0
    # Line by line: a newline never composes with its neighbours, and most
    # lines of a note are already normalized.
    for line in text.splitlines(keepends=True):
        if unicodedata.is_normalized("NFKC", line):
            parts.append(line)
            offsets.extend(range(base, base + len(line)))
            ends.extend(range(base + 1, base + len(line) + 1))
        else:
            for s, e, norm in _unit_spans(line):
                parts.append(norm)
                offsets.extend([base + s] * len(norm))
                ends.extend([base + e] * len(norm))
        base += len(line)
    if "".join(parts) != expected:  # pragma: no cover - defensive, never seen
        # Coarsest safe fallback: the whole text is one unit.
        offsets = [0] * len(expected)
        ends = [n] * len(expected)
    return Normalized(expected, tuple(offsets), tuple(ends), n)


# --------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------

# Bracket pairs: a sentence does not end inside one; an answer phrase is not cut inside one.
OPEN_TO_CLOSE = {
    "「": "」",
    "『": "』",
    "（": "）",
    "(": ")",
    "【": "】",
    "［": "］",
    "[": "]",
    "〔": "〕",
    "〈": "〉",
    "《": "》",
    "“": "”",
    "｢": "｣",
}
CLOSE_TO_OPEN = {c: o for o, c in OPEN_TO_CLOSE.items()}
_QUOTE_OPENERS = frozenset("「『")
# Characters kept with the sentence after its terminator: closers and quotes.
_TRAILERS = frozenset(CLOSE_TO_OPEN) | frozenset("\"'’”")
_STRONG_ENDS = frozenset("。！？｡‼⁇⁈⁉")
_ENDS = _STRONG_ENDS | frozenset("．.!?")
# After 「…。」 these continue the sentence (quotation particle, case particle, comma).
_QUOTE_CONTINUERS = frozenset("とってのはがをにへや、，,")
_NEWLINES = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# A newline inside an open 「…」 does not end the sentence when the quote closes
# within this many characters (and before a blank line).
QUOTE_LOOKAHEAD = 200

# Lines that are one sentence each: bullets, numbered items, org/markdown headings.
_BLOCK_LINE = re.compile(
    r"[ \t\u3000]*(?:"
    r"[-*+•][ \t\u3000]"  # markdown/org bullets, org `- [ ]`, org `* heading`
    r"|\*+[ \t]"  # org heading `** sub`
    r"|#{1,6}(?:[ \t]|$)"  # markdown heading
    r"|・"
    r"|[0-9]+[.)][ \t]"  # 1. item / 1) item
    r"|[０-９0-9]+[．）](?![０-９0-9])"  # １．item
    r")",
    re.MULTILINE,
)


def _is_alnum_ascii_or_wide(ch: str) -> bool:
    o = ord(ch)
    return (
        ch.isascii()
        and ch.isalnum()
        or 0xFF10 <= o <= 0xFF19
        or 0xFF21 <= o <= 0xFF3A
        or 0xFF41 <= o <= 0xFF5A
    )


def _is_newline(text: str, k: int) -> bool:
    ch = text[k]
    if ch not in _NEWLINES:
        return False
    # "\r\n" is one line break: count it at the "\n".
    return not (ch == "\r" and k + 1 < len(text) and text[k + 1] == "\n")


def _pop_to(stack: list[str], opener: str) -> None:
    while stack:
        if stack.pop() == opener:
            return


def _run_end(text: str, i: int) -> int:
    """Index after the run of terminators and closers that starts at `i`."""
    j = i
    while j < len(text) and (text[j] in _ENDS or text[j] in _TRAILERS):
        j += 1
    return j


def _terminates(text: str, i: int) -> bool:
    """Does the terminator candidate at `i` end a sentence (at depth 0)?"""
    c = text[i]
    if c in _STRONG_ENDS:
        return True
    n = len(text)
    if c == "．":
        prev = text[i - 1] if i else ""
        nxt = text[i + 1] if i + 1 < n else ""
        # Not in １．５ or ｅｘａｍｐｌｅ．ｃｏｍ
        return not (prev and nxt and _is_alnum_ascii_or_wide(prev) and _is_alnum_ascii_or_wide(nxt))
    j = _run_end(text, i)
    nxt = text[j] if j < n else ""
    if c == ".":
        # Not in 3.5, URLs, robots.txt; yes in "幻覚. 人工知能" and at line end.
        return i > 0 and not text[i - 1].isdigit() and (not nxt or nxt.isspace())
    # ASCII ! and ?: not inside URLs (?leaderboard) or ![image](...)
    return not nxt or nxt.isspace() or not nxt.isascii()


def _quote_closes_soon(text: str, i: int, stack: list[str]) -> bool:
    """Newline at `i` inside 「…: does the quote close within the lookahead?"""
    if not any(o in _QUOTE_OPENERS for o in stack):
        return False
    st = list(stack)
    blank = True  # the line being scanned is blank so far
    for k in range(i + 1, min(len(text), i + 1 + QUOTE_LOOKAHEAD)):
        ch = text[k]
        if _is_newline(text, k):
            if blank:
                return False
            blank = True
            continue
        if not ch.isspace():
            blank = False
        if ch in OPEN_TO_CLOSE:
            st.append(ch)
        elif ch in CLOSE_TO_OPEN and CLOSE_TO_OPEN[ch] in st:
            _pop_to(st, CLOSE_TO_OPEN[ch])
            if not any(o in _QUOTE_OPENERS for o in st):
                return True
    return False


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` into `text`, in order, stripped of whitespace.

    Splits after 。！？ ．, after ASCII ``.`` followed by whitespace (not in
    ``3.5`` or URLs) and after ``!``/``?`` not followed by ASCII. Closing
    brackets and quotes stay with their sentence (``「…。」``, ``。）``), and
    nothing splits inside 「」『』（）() and similar pairs. A line break ends a
    sentence, except inside a 「…」 that closes within `QUOTE_LOOKAHEAD`
    characters and before a blank line; an unclosed bracket loses its protection
    at the line break. Bullet lines (``- ``, ``* ``, ``+ ``, ``・``, ``1. ``,
    ``１．``) and headings (``#``, org ``*``) are one sentence each.

        >>> t = "彼は「行こう。」と言った。次の文。\\n- 箇条. 書き"
        >>> [t[s:e] for s, e in split_sentences(t)]
        ['彼は「行こう。」と言った。', '次の文。', '- 箇条. 書き']
    """
    spans: list[tuple[int, int]] = []
    n = len(text)
    start = -1  # start of the current sentence, -1 when none is open
    stack: list[str] = []
    block = False  # the current line is a bullet or heading
    line_start = True

    def close(end: int) -> None:
        nonlocal start
        if start < 0:
            return
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
        start = -1

    i = 0
    while i < n:
        if line_start:
            line_start = False
            block = start < 0 and _BLOCK_LINE.match(text, i) is not None
        c = text[i]
        if _is_newline(text, i):
            if stack and not block and _quote_closes_soon(text, i, stack):
                i += 1
                continue
            close(i)
            stack.clear()
            line_start = True
            i += 1
            continue
        if c.isspace():
            i += 1
            continue
        if start < 0:
            start = i
        if c in OPEN_TO_CLOSE:
            stack.append(c)
        elif c in CLOSE_TO_OPEN:
            opener = CLOSE_TO_OPEN[c]
            if opener in stack:
                _pop_to(stack, opener)
                if not stack and not block and _closes_sentence(text, i):
                    j = _run_end(text, i)
                    if j >= n or text[j] not in _QUOTE_CONTINUERS:
                        close(j)
                        i = j
                        continue
        elif c in _ENDS and not stack and not block and _terminates(text, i):
            j = _run_end(text, i)
            close(j)
            i = j
            continue
        i += 1
    close(n)
    return spans


def _closes_sentence(text: str, i: int) -> bool:
    """Closer at `i` returned to depth 0: was the bracket's content a finished sentence?"""
    k = i - 1
    while k >= 0 and text[k] in _TRAILERS:
        k -= 1
    if k < 0 or text[k] not in _ENDS:
        return False
    if text[k] == ".":
        return k > 0 and not text[k - 1].isdigit()
    return True


# --------------------------------------------------------------------------
# Morphemes (fugashi + unidic-lite)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Morpheme:
    """One MeCab token; `start`/`end` are char offsets into the analyzed text."""

    surface: str
    lemma: str
    pos1: str
    pos2: str
    start: int
    end: int


# Content words for BM25 and the citation checker (unidic pos1; 形状詞 is
# unidic's name for 形容動詞 stems such as 静か).
CONTENT_POS = frozenset({"名詞", "動詞", "形容詞", "形状詞", "副詞"})
# Dropped even under a content pos1: よう/そう/みたい stems.
DROPPED_POS2 = frozenset({"助動詞語幹"})
# Lemmas too common to carry meaning: light/auxiliary verbs, formal nouns,
# demonstrative adverbs. Kept verbs such as 見る, 行く, 言う are real content.
STOP_LEMMAS = frozenset(
    {
        "為る",  # する
        "有る",  # ある
        "居る",  # いる
        "成る",  # なる
        "出来る",  # できる
        "無い",  # ない (adjective)
        "仕舞う",  # てしまう
        "呉れる",  # てくれる
        "事",  # こと
        "物",  # もの
        "為",  # ため
        "様",  # よう
        "そう",
        "こう",
        "ああ",
        "どう",
    }
)


def _features(raw: str) -> tuple[str, str, str | None]:
    """(pos1, pos2, lemma) from a unidic feature string (unknown words: lemma None)."""
    parts = raw.split(",", 8)
    quote = raw.find('"')
    # A quoted field (a comma inside) only matters before the lemma's end.
    if quote >= 0 and (len(parts) <= 8 or quote < len(raw) - len(parts[8])):
        parts = next(csv.reader([raw]))
    lemma = parts[7] if len(parts) > 7 else None
    return parts[0], (parts[1] if len(parts) > 1 else "*"), lemma


def _clean_lemma(lemma: str | None, surface: str) -> str:
    """unidic lemma without its ``-user`` / ``-断定`` suffix; surface when missing."""
    if not lemma or lemma == "*":
        return surface
    cut = lemma.find("-")
    if cut > 0:
        lemma = lemma[:cut]
    return lemma


# MeCab skips only " \t\n\v"; other whitespace (\r, \u3000, NBSP...) would become
# tokens or glue onto neighbouring symbols, and a NUL would end its C string.
# They are read as a space (same length, so offsets hold): no token then holds
# whitespace, and every str.isspace() character is skipped like a space.
_MECAB_BLANKS = re.compile(
    "[\x00\x0c\r\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)


def _mecab_safe(text: str) -> str:
    return _MECAB_BLANKS.sub(" ", text)


class Analyzer:
    """A MeCab tagger (fugashi + unidic-lite) and the analyses built on it.

    Build one per process (`default_analyzer()`) and pass it where needed.
    """

    def __init__(self) -> None:
        try:
            import fugashi
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "日本語の形態素解析には fugashi と unidic-lite が必要です: "
                "pip install fugashi unidic-lite"
            ) from exc
        self._tagger = fugashi.Tagger()
        # The same dictionary printing only what the hot paths read, one line per token:
        # one C call per text instead of a Python node object per token (ingest's MeCab
        # time -22 % for lemmas, -38 % for token offsets). EOS ends the output, so an empty
        # last field is not lost when fugashi strips it. MeCab prints a "*" field as "".
        dicdir = Path(self._tagger.dictionary_info[0]["filename"]).parent
        rc, dic = shlex.quote(str(dicdir / "mecabrc")), shlex.quote(str(dicdir))
        # fugashi splits the arguments with shlex: "\\t" reaches MeCab as its tab escape.
        base = f"-r {rc} -d {dic} --output-format-type= " + r"--eos-format=EOS\\n"
        self._lemma_tagger = fugashi.GenericTagger(
            base + r" --node-format=%m\\t%f[0]\\t%f[1]\\t%f[7]\\n --unk-format=%m\\t%f[0]\\t%f[1]\\t\\n"
        )
        self._surface_tagger = fugashi.GenericTagger(base + r" --node-format=%m\\n --unk-format=%m\\n")

    def morphemes(self, text: str) -> list[Morpheme]:
        """Morphemes of `text` (as given, not normalized) with char offsets.

        MeCab drops whitespace; offsets are recovered by walking surfaces and
        each node's preceding `white_space`, so ``text[m.start:m.end] ==
        m.surface`` always holds.
        """
        out: list[Morpheme] = []
        for node, s, e in self._nodes(text):
            pos1, pos2, lemma = _features(node.feature_raw)
            out.append(Morpheme(text[s:e], _clean_lemma(lemma, node.surface), pos1, pos2, s, e))
        return out

    def _nodes(self, text: str):
        """(node, start, end) for each MeCab token of `text`, offsets into `text`."""
        src = _mecab_safe(text)
        pos = 0
        for node in self._tagger(src):
            surface = node.surface
            if not surface:
                continue
            guess = pos + len(node.white_space)
            if src.startswith(surface, guess):
                s = guess
            else:
                s = src.find(surface, pos)
                if s < 0:
                    continue
            pos = s + len(surface)
            yield node, s, pos

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of each MeCab token of `text`: `_nodes` without the features."""
        src = _mecab_safe(text)
        out: list[tuple[int, int]] = []
        pos = 0
        for surface in _token_lines(self._surface_tagger, src):
            s = src.find(surface, pos)
            if s < 0:
                continue
            pos = s + len(surface)
            out.append((s, pos))
        return out

    def content_lemmas(self, text: str) -> list[str]:
        """Lemmas of content words, for BM25 and the citation checker.

        NFKC first (``７Ｂ`` -> ``7``, ``b``), Latin lowercased. Keeps `CONTENT_POS`
        (nouns incl. numbers, verbs, adjectives, 形状詞, adverbs); drops
        particles, auxiliaries, symbols, pronouns, prefixes, suffixes,
        adnominals, conjunctions, interjections and `STOP_LEMMAS`. Inflections
        share a lemma (走った/走ります -> 走る). Proper nouns keep their surface
        (unidic's lemma for 東京 is トウキョウ).
        """
        out: list[str] = []
        for line in _token_lines(self._lemma_tagger, _mecab_safe(_nfkc(text))):
            surface, pos1, pos2, lemma = line.split("\t")
            if pos1 not in CONTENT_POS or pos2 in DROPPED_POS2:
                continue
            word = surface if pos2 == "固有名詞" else _clean_lemma(lemma, surface)
            if word in STOP_LEMMAS or not word.strip():
                continue
            out.append(word.lower())
        return out

    def surfaces(self, text: str) -> list[str]:
        """Token surfaces only (the fast path)."""
        return [node.surface for node in self._tagger(_mecab_safe(text))]

    def count_tokens(self, text: str) -> int:
        """Number of MeCab tokens in `text`."""
        return len(self._tagger(_mecab_safe(text)))

    def sentences(self, text: str) -> list[tuple[int, int]]:
        """`split_sentences`, with no cut inside a morpheme.

        On real text the two agree. When MeCab glues a sentence end to what
        follows (symbol runs such as ``。-`` at the very start), the sentences on
        both sides of that cut are merged.
        """
        spans = split_sentences(text)
        if len(spans) < 2:
            return spans
        # Only where tokens start and end: no features parsed (a third of ingest's MeCab time).
        bounds = self._spans(text)
        starts = [s for s, _ in bounds]

        def inside(pos: int) -> bool:
            k = bisect.bisect_right(starts, pos) - 1
            return k >= 0 and bounds[k][0] < pos < bounds[k][1]

        merged = [spans[0]]
        for s, e in spans[1:]:
            if inside(merged[-1][1]) or inside(s):
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        return merged

    def morpheme_boundaries(self, text: str) -> list[int]:
        """Char offsets where a morpheme starts: safe places to cut `text`."""
        return [s for s, _ in self._spans(text)]


def _token_lines(tagger, text: str) -> list[str]:
    """One output line per token of a tagger printing ``...\\n`` per token and ``EOS``."""
    lines = tagger.parse(text).split("\n")
    if not lines or lines[-1] != "EOS":  # pragma: no cover - a MeCab format error
        raise RuntimeError(f"MeCab の出力が想定外です: {lines[-1:]!r}")
    return [line for line in lines[:-1] if line]


@functools.lru_cache(maxsize=1)
def default_analyzer() -> Analyzer:
    """The process-wide `Analyzer` (built on first use)."""
    return Analyzer()
