"""How `rag` output looks in a terminal: mappings as 「キー 値・キー 値」 and Japanese text
wrapped at phrase boundaries instead of mid-word.

Rich wraps only at whitespace and folds anything longer at an arbitrary character, so
「プレフィックスは未キャッシュ」 becomes 「未キャッ / シュ」 at the edge of the window. Here
a line may end after 、。・ and full-width closing brackets, before opening brackets, at a
space (not inside 「243 秒」 or 「窓 4096」: a number stays with its label and unit) and
where hiragana gives way to kanji, katakana or a digit (a bunsetsu boundary, roughly:
「的を|絞った|質問で」). A phrase wider than a whole line is split more loosely (any space,
any change of script), then between any two characters that kinsoku allows; only a run of
latin letters wider than the line is folded anywhere.

Imported by the CLI's commands, never at `rag --help`; rich is imported where it is used.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.documents import display_path

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = ["human", "phrase_units", "print_wrapped", "status_lines", "wrap"]

_BREAK_AFTER = frozenset("、。，．・：；！？")
_CLOSERS = frozenset("）」』】〕］｝〉》")
_OPENERS = frozenset("（「『【〔［｛〈《([{")
# Kinsoku: these never begin a line.
_NO_LINE_START = _CLOSERS | _BREAK_AFTER | frozenset(
    "ー～ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ々ゝゞヽヾ,.:;!?%)]}"
)
# How freely a line may break, tried in order: a phrase wider than the whole line is
# split at the next level. PHRASE as the module docstring says; LOOSE adds every space,
# every closing bracket and every change of script (kanji, kana, latin); CHAR any two
# characters except inside a latin word or against kinsoku; ANY is the fold.
PHRASE, LOOSE, CHAR, ANY = 1, 2, 3, 4


def _script(ch: str) -> str:
    if "\u3041" <= ch <= "\u309f":
        return "hiragana"
    if "\u30a1" <= ch <= "\u30fa" or ch == "ー":
        return "katakana"
    if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or ch == "々":
        return "kanji"
    return "latin" if ch.isalnum() or ch in "._-" else "other"  # 243.0, ollama.md, Self-Route


def _break_level(text: str, i: int) -> int:
    """The first level at which a line may end between text[i-1] and text[i]."""
    prev, cur = text[i - 1], text[i]
    if cur.isspace():
        return ANY
    if prev.isspace():
        j = i - 1
        while j >= 0 and text[j].isspace():
            j -= 1
        if j < 0:
            return ANY
        if text[j].isdigit() and cur not in _OPENERS:
            return CHAR  # 「243 秒」: a number keeps its unit
        if cur.isdigit() and _script(text[j]) != "hiragana" or _script(cur) == "hiragana":
            return LOOSE  # 「窓 4096」「Ollama は」: a label keeps its number, a word its particle
        return PHRASE
    if cur in _NO_LINE_START or prev in _OPENERS:
        return ANY
    if prev in _BREAK_AFTER:
        return PHRASE
    p, c = _script(prev), _script(cur)
    if prev in _CLOSERS:
        return LOOSE if c == "hiragana" else PHRASE  # 「分かりません」だった stays one phrase
    if cur in _OPENERS and not cur.isascii():
        return PHRASE  # not before [1]: a citation stays with its sentence
    if p == "hiragana" and c in ("kanji", "katakana", "latin"):
        return PHRASE  # particles end a bunsetsu: 的を|絞った|質問で
    if cur == "/":
        return CHAR  # a path breaks after its slashes, not before
    if p != c or prev in ")]}":
        return LOOSE
    return ANY if p == "latin" else CHAR


def phrase_units(text: str, level: int = PHRASE, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of the pieces of text[start:end] that a line may not be broken inside
    at `level`; they cover the range, each with the spaces that follow it."""
    end = len(text) if end is None else end
    units = []
    for i in range(start + 1, end):
        if _break_level(text, i) <= level:
            units.append((start, i))
            start = i
    if start < end:
        units.append((start, end))
    return units


def _line_starts(plain: str, width: int, first_cells: int, indent_cells: int) -> list[int]:
    """Offsets where a new line begins: greedy fill by terminal cells, phrase by phrase;
    a phrase wider than a whole line is split at the next level, folding last."""
    from rich.cells import cell_len

    starts: list[int] = []
    full = max(width - indent_cells, 1)  # the room on every line after the first
    avail, used = max(width - first_cells, 1), 0

    def fill(start: int, end: int, level: int) -> None:
        nonlocal avail, used
        for a, b in phrase_units(plain, level, start, end):
            need = cell_len(plain[a:b].rstrip())  # spaces may hang past the edge
            if used and used + need > avail and (need <= full or level == ANY):
                starts.append(a)
                avail, used = full, 0
            if used + need <= avail or level == ANY:
                used += cell_len(plain[a:b])
            else:  # wider than a whole line: split it more finely, from where we are
                fill(a, b, level + 1)

    fill(0, len(plain), PHRASE)
    return starts


def wrap(text: "Text | str", width: int, first: str = "", indent: str = "") -> list["Text"]:
    """`first` + `text` as lines of at most `width` cells, broken between phrases of
    `text`; lines after the first begin with `indent`. Styles are kept; a str is taken
    literally (no markup)."""
    from rich.cells import cell_len
    from rich.text import Text

    text = Text(text) if isinstance(text, str) else text
    out: list[Text] = []
    for paragraph in text.split("\n", allow_blank=True):  # a line break in the text is kept
        prefix = indent if out else first
        starts = _line_starts(paragraph.plain, width, cell_len(prefix), cell_len(indent))
        for line in paragraph.divide(starts):
            line = Text.assemble(indent if out else first, line)
            line.rstrip()
            out.append(line)
    return out


def print_wrapped(console: "Console", text: "Text | str", first: str = "", indent: str = "") -> None:
    """Print `first` + `text` wrapped to the console's width at phrase boundaries (see `wrap`)."""
    for line in wrap(text, console.width, first, indent):
        console.print(line, no_wrap=True, overflow="ignore", crop=False)


def human(value) -> str:
    """A value as a person reads it: {'org': 5, 'text': 7} → 「org 5・text 7」 (largest first),
    lists joined by 、, None as —, booleans as はい / いいえ."""
    if isinstance(value, Mapping):
        if not value:
            return "—"
        items = list(value.items())
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in items):
            items.sort(key=lambda kv: -kv[1])
        return "・".join(f"{k} {human(v)}" for k, v in items)
    if isinstance(value, (list, tuple, set, frozenset)):
        return "、".join(human(v) for v in value) if value else "—"
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "はい" if value else "いいえ"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# The keys status_lines renders in its own words; any other key is shown as 「key: value」.
_STATUS_KEYS = frozenset({
    "index_dir", "generation", "size_bytes", "documents", "chunks", "characters", "embedding_tokens",
    "formats", "encodings", "embed_model", "chunk_tokens", "llm_backend", "long_context_window",
    "llm_tokens_estimated", "fits_long_context", "last_ingest", "changed_since_ingest",
})
MAX_CHANGED_SHOWN = 20  # per kind (更新 / 削除 / 新規); the counts give the rest


def status_lines(data: dict) -> list[str]:
    """`rag status` for a person: the index_status dict, one fact per line, no Python reprs."""
    last = data.get("last_ingest") or {}
    changed = data.get("changed_since_ingest") or {"modified": [], "deleted": [], "new": []}
    lines = [
        f"インデックス: {data['index_dir']} (世代 {data['generation']}, {data['size_bytes'] / 1e6:.1f} MB)",
        f"文書 {data['documents']} / チャンク {data['chunks']} / 文字 {data['characters']} / "
        f"埋め込みトークン {data['embedding_tokens']}",
        f"形式 {human(data['formats'])} / 文字コード {human(data['encodings'])}",
        f"埋め込みモデル {human(data['embed_model'])} (チャンク {human(data['chunk_tokens'])} トークン)",
        f"LLM {data['llm_backend']}: 窓 {data['long_context_window']} トークン, コーパス推定 "
        f"{data['llm_tokens_estimated']} トークン → " + ("全体が窓に入る" if data["fits_long_context"] else "窓に入らない"),
        "前回の取り込み: " + (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["finished_at"]))
            + f" (追加 {last['added']}, 変更 {last['changed']}, 削除 {last['deleted']}, スキップ {len(last['skipped'])})"
            if last else "記録なし"
        ),
        f"その後の変更: 更新 {len(changed['modified'])}, 削除 {len(changed['deleted'])}, 新規 {len(changed['new'])}",
    ]
    for key, label in (("modified", "更新"), ("deleted", "削除"), ("new", "新規")):
        for p in changed[key][:MAX_CHANGED_SHOWN]:
            lines.append(f"  {label}: {display_path(p)}")
    lines += [f"{key}: {human(value)}" for key, value in data.items() if key not in _STATUS_KEYS]
    return lines
