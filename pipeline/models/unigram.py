"""XLM-R unigram tokenization in plain Python: the embedded model's light query tokenizer.

`tokenizers.Tokenizer.from_file` on the embedded model's tokenizer.json (250,002 pieces)
takes about 1 s and keeps about 280 MB (its trie of pieces): more than everything else a
one-shot `rag search` needs. `UnigramTokenizer` keeps the pieces as a sorted, memory-mapped
array (a question reads a few pages of it; a dict of them would cost 0.2 s and 45 MB) and
repeats, step by step, what `tokenizers` 0.23 does with the tokenizer `pipeline.models.e5`
writes:

1. special-token strings in the text (`<s>`, `<mask>`, ...) become their ids;
2. the Precompiled normalizer maps each grapheme cluster shorter than 6 bytes by the
   rule of its *first* code point, others code point by code point; then runs of
   spaces collapse to one;
3. Metaspace: spaces become U+2581, one is prepended, and the text splits before each;
4. each word is cut by Viterbi over the piece scores (ties keep the earlier start; an
   unknown character scores min score - 10; adjacent unknowns fuse into one `<unk>`);
5. at most `max_length - 2` pieces, between `<s>` and `</s>`.

Step 2 needs grapheme clusters, which the standard library cannot find. Where every
cluster is one code point (almost every Japanese question) the per-code-point map is
exact; `encode` returns None for a text with a character that may join a cluster
(combining marks, joiners, variation selectors, Hangul jamo, regional indicators,
emoji modifiers, CR, unassigned code points) or with a special-token string, and the
caller tokenizes that one with `tokenizers`. `from_tokenizer` builds the tables from a
`tokenizers.Tokenizer` itself, so the two cannot drift apart silently; tests compare them
on whole corpora.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
TABLES = "unigram.json"  # normalization map, special tokens, ids, max length
PIECES = "unigram-pieces.npy"  # every piece as UTF-8, byte-sorted (fixed width)
PIECE_IDS = "unigram-ids.npy"  # the id of each sorted piece
SCORES = "unigram-scores.npy"  # score by id (float64, as tokenizers keeps them)
META = "\u2581"
K_UNK_PENALTY = 10.0  # tokenizers' (and SentencePiece's) unknown-character penalty
_SPACES = re.compile(" {2,}")
_WORDS = re.compile(f"{META}[^{META}]*")
# Code points that may join their neighbour in an extended grapheme cluster without being
# marks or format characters: halfwidth (semi-)voiced sound marks (Grapheme_Extend), Thai
# and Lao SARA AM (SpacingMark), and the Prepend letters.
_JOINING = frozenset(
    [0xFF9E, 0xFF9F, 0x0E33, 0x0EB3, 0x0D4E, 0x111C2, 0x111C3, 0x1193F, 0x11941, 0x11A3A, 0x11D46, 0x11F02]
    + list(range(0x11A84, 0x11A8A))
)
_JOINING_CATEGORIES = frozenset(("Mn", "Mc", "Me", "Cf", "Cn", "Co", "Cs"))


def may_join(ch: str) -> bool:
    """True when `ch` may be part of a grapheme cluster of several code points."""
    o = ord(ch)
    return (
        unicodedata.category(ch) in _JOINING_CATEGORIES
        or ch == "\r"
        or o in _JOINING
        or 0x1100 <= o <= 0x11FF  # Hangul jamo
        or 0xA960 <= o <= 0xA97F
        or 0xD7B0 <= o <= 0xD7FF
        or 0x1F1E6 <= o <= 0x1F1FF  # regional indicators
        or 0x1F3FB <= o <= 0x1F3FF  # emoji skin-tone modifiers
    )


class UnigramTokenizer:
    """Text -> token ids as the embedded model's `tokenizers` pipeline gives them, or None."""

    def __init__(
        self,
        pieces: np.ndarray,
        piece_ids: np.ndarray,
        scores: np.ndarray,
        tables: dict[str, Any],
    ):
        self.pieces = pieces  # sorted bytes
        self.piece_ids = piece_ids
        self.scores = scores
        self.norm: dict[str, str] = tables["norm"]
        self.specials = tuple(tables["specials"])
        self.unk_id, self.bos_id, self.eos_id = tables["unk_id"], tables["bos_id"], tables["eos_id"]
        self.max_length = int(tables["max_length"])
        self.longest = int(tables["longest"])  # characters in the longest piece
        self.unk_score = float(tables["min_score"]) - K_UNK_PENALTY
        self.tables = tables

    def token_id(self, piece: str) -> int | None:
        found = self._lookup([piece.encode()])
        return found[0] if found else None

    # ------------------------------------------------------------------ building, files

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, max_length: int) -> "UnigramTokenizer":
        """The tables of a `tokenizers.Tokenizer` built like `pipeline.models.e5.build_tokenizer`;
        ValueError when its pipeline is not the one this class repeats."""
        import base64

        from tokenizers import normalizers

        spec = json.loads(tokenizer.to_str())
        model, norm_spec, pre = spec["model"], spec["normalizer"], spec["pre_tokenizer"]
        steps = norm_spec.get("normalizers", []) if norm_spec else []
        expected = (
            model.get("type") == "Unigram"
            and not model.get("byte_fallback")
            and [s.get("type") for s in steps] == ["Precompiled", "Replace"]
            and steps[1]["pattern"] == {"Regex": " {2,}"}
            and steps[1]["content"] == " "
            and pre == {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True}
            and [t["content"] for t in spec["added_tokens"] if not t["special"] or t["normalized"]] == []
            and (spec.get("post_processor") or {}).get("type") == "TemplateProcessing"
            and [list(x) for x in spec["post_processor"]["single"]] == [["SpecialToken"], ["Sequence"], ["SpecialToken"]]
        )
        if not expected:
            raise ValueError("tokenizer pipeline differs from the embedded model's (unigram.py repeats that one only)")
        vocab = [p for p, _ in model["vocab"]]
        encoded = [p.encode() for p in vocab]
        if any(not b or b"\0" in b for b in encoded):
            raise ValueError("a piece is empty or holds NUL")
        order = sorted(range(len(encoded)), key=encoded.__getitem__)
        pieces = np.array([encoded[i] for i in order], dtype=f"S{max(map(len, encoded))}")
        charsmap = normalizers.Precompiled(base64.b64decode(steps[0]["precompiled_charsmap"]))
        norm = {}
        for cp in range(0x110000):
            if 0xD800 <= cp <= 0xDFFF:
                continue
            ch = chr(cp)
            out = charsmap.normalize_str(ch)
            if out != ch:
                norm[ch] = out
        single = spec["post_processor"]["single"]  # <s> $A </s>
        scores = np.array([s for _, s in model["vocab"]], np.float64)
        return cls(
            pieces,
            np.array(order, np.int32),
            scores,
            {
                "format": FORMAT,
                "norm": norm,
                "specials": [t["content"] for t in spec["added_tokens"]],
                "unk_id": int(model["unk_id"]),
                "bos_id": vocab.index(single[0]["SpecialToken"]["id"]),
                "eos_id": vocab.index(single[2]["SpecialToken"]["id"]),
                "max_length": max_length,
                "longest": max(map(len, vocab)),
                "min_score": float(scores.min()),
            },
        )

    def save(self, directory: Path) -> list[str]:
        """Write the four files into `directory`; returns their names."""
        directory = Path(directory)
        np.save(directory / PIECES, self.pieces)
        np.save(directory / PIECE_IDS, self.piece_ids)
        np.save(directory / SCORES, self.scores)
        (directory / TABLES).write_text(
            json.dumps(self.tables, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
        )
        return [TABLES, PIECES, PIECE_IDS, SCORES]

    @classmethod
    def load(cls, directory: Path) -> "UnigramTokenizer":
        directory = Path(directory)
        tables = json.loads((directory / TABLES).read_bytes())
        if tables.get("format") != FORMAT:
            raise ValueError(f"{directory / TABLES}: format {tables.get('format')!r}, expected {FORMAT}")
        arrays = [np.load(directory / name, mmap_mode="r") for name in (PIECES, PIECE_IDS, SCORES)]
        if not (len(arrays[0]) == len(arrays[1]) == len(arrays[2])):
            raise ValueError(f"{directory}: unigram arrays differ in length")
        return cls(*arrays, tables)

    # ------------------------------------------------------------------ encoding

    def handles(self, text: str) -> bool:
        """Whether `encode` is exact for this text (see the module docstring)."""
        if "<" in text and any(s in text for s in self.specials):
            return False
        return not any(may_join(ch) for ch in set(text))

    def encode(self, text: str) -> list[int] | None:
        """Token ids with `<s>` / `</s>`, truncated to `max_length`; None when not `handles`."""
        if not self.handles(text):
            return None
        norm = self.norm
        normalized = _SPACES.sub(" ", "".join([norm.get(ch, ch) for ch in text]))
        ids: list[int] = []
        if normalized:
            normalized = normalized.replace(" ", META)
            if not normalized.startswith(META):
                normalized = META + normalized
            for word in _WORDS.findall(normalized):
                ids.extend(self._viterbi(word))
        return [self.bos_id, *ids[: self.max_length - 2], self.eos_id]

    def _lookup(self, keys: list[bytes]) -> list[int | None]:
        """The id of each UTF-8 piece, None where it is not in the vocabulary (one binary search)."""
        width = self.pieces.dtype.itemsize
        # Too long, or holding NUL (numpy strips trailing NULs): never a piece.
        fits = [k if len(k) <= width and b"\0" not in k else b"" for k in keys]
        wanted = np.array(fits, dtype=self.pieces.dtype)
        pos = np.minimum(np.searchsorted(self.pieces, wanted), len(self.pieces) - 1)
        found = self.pieces[pos] == wanted
        ids = self.piece_ids[pos]
        return [int(i) if f else None for i, f in zip(ids.tolist(), found.tolist())]

    def _viterbi(self, word: str) -> list[int]:
        n = len(word)
        spans = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + self.longest) + 1)]
        found = self._lookup([word[i:j].encode() for i, j in spans])
        candidates: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for (i, j), tid in zip(spans, found):
            if tid is not None:
                candidates[i].append((j, tid))
        scores = self.scores
        best = [0.0] * (n + 1)
        start: list[int] = [-1] * (n + 1)
        token: list[int] = [0] * (n + 1)
        for i in range(n):
            base = best[i]
            single = False
            for j, tid in candidates[i]:  # shorter first, as tokenizers' trie yields them
                if j == i + 1:
                    single = True
                score = float(scores[tid]) + base
                if start[j] < 0 or score > best[j]:
                    best[j], start[j], token[j] = score, i, tid
            if not single:
                score = self.unk_score + base
                if start[i + 1] < 0 or score > best[i + 1]:
                    best[i + 1], start[i + 1], token[i + 1] = score, i, self.unk_id
        out: list[int] = []
        end = n
        while end > 0:
            tid = token[end]
            if not (tid == self.unk_id and out and out[-1] == self.unk_id):  # fuse unknowns
                out.append(tid)
            end = start[end]
        out.reverse()
        return out
