"""Japanese BM25 over MeCab content-word lemmas (bm25s), saved as plain files.

Stock tokenizers split on `\\w\\w+` and score every Japanese query 0; here the
tokens are the lemmas `pipeline.japanese` gives, computed once per chunk at ingest,
plus character bigrams (`bm25_tokens`, the one tokenizer for chunks and queries).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

IDS_FILE = "chunk_ids.json"
EMPTY_TOKEN = "\u2205"  # keeps bm25s happy with a chunk that has no content word
# What `bm25_tokens` produces; bump when it changes (caches and index fingerprints key on it).
# 1: content-word lemmas; 2: lemmas + character bigrams of word runs.
TOKENS_VERSION = 2
# BM25 saturation and length normalization: Anserini's defaults, better than bm25s's
# (1.5, 0.75) on every Japanese set measured (benchmarks/results/retrieval.md).
K1 = 0.9
B = 0.4

_WORD_RUN = re.compile(r"\w+")


def char_bigrams(text: str) -> list[str]:
    """Overlapping character pairs inside each run of word characters (NFKC, lower case).

    A run of one character gives that character. Punctuation and spaces separate runs.

        >>> char_bigrams("東京タワー、ＧＰＵ")
        ['東京', '京タ', 'タワ', 'ワー', 'gp', 'pu']
    """
    out: list[str] = []
    for run in _WORD_RUN.findall(unicodedata.normalize("NFKC", text).lower()):
        out.extend(run[i : i + 2] for i in range(len(run) - 1)) if len(run) > 1 else out.append(run)
    return out


def bm25_tokens(analyzer, text: str) -> list[str]:
    """BM25 tokens of a chunk or a query: content-word lemmas, then character bigrams.

    Lemmas match inflected forms (走った ~ 走ります); bigrams match what MeCab cuts
    differently in a question and a passage (compounds, names, katakana, numbers).
    Measured (benchmarks/results/retrieval.md): BM25 nDCG@10 on jsquad 0.937 -> 0.952,
    jemhopqa 0.921 -> 0.926. A bigram equal to a lemma is the same token, on purpose.
    """
    return analyzer.content_lemmas(text) + char_bigrams(text)


@dataclass(frozen=True)
class SparseHit:
    chunk_id: str
    score: float


class BM25Index:
    def __init__(self, ids: list[str], retriever) -> None:
        self.ids = ids
        self.retriever = retriever
        self._token_max: np.ndarray | None = None

    @classmethod
    def build(cls, ids: Sequence[str], tokens: Sequence[Sequence[str]]) -> "BM25Index":
        import bm25s

        retriever = bm25s.BM25(k1=K1, b=B)
        if ids:
            retriever.index([list(t) or [EMPTY_TOKEN] for t in tokens], show_progress=False)
        return cls(list(ids), retriever)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.ids:
            self.retriever.save(str(directory), show_progress=False)
        (directory / IDS_FILE).write_text(json.dumps(self.ids), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "BM25Index":
        import bm25s

        ids = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
        retriever = bm25s.BM25.load(str(directory)) if ids else bm25s.BM25()
        return cls(ids, retriever)

    def shape_problem(self, chunks: int) -> str | None:
        """Why these files cannot be the BM25 index of `chunks` chunks, or None.

        Cheap checks of what was loaded anyway (counts, array shapes, index ranges), so a
        file swapped in from another generation or cut short is named instead of
        scoring the wrong chunks or failing inside numpy.
        """
        if not isinstance(self.ids, list) or not all(isinstance(i, str) for i in self.ids):
            return f"{IDS_FILE}: チャンク ID の列ではありません"
        if len(self.ids) != chunks:
            return f"ID が {len(self.ids)} 個、マニフェストのチャンクは {chunks} 個"
        if len(set(self.ids)) != len(self.ids):
            return f"{IDS_FILE}: 重複した ID があります"
        if not self.ids:
            return None
        scores = self.retriever.scores
        data, indices, indptr = (np.asarray(scores[k]) for k in ("data", "indices", "indptr"))
        if scores.get("num_docs") != len(self.ids):
            return f"文書数が {scores.get('num_docs')}、ID は {len(self.ids)} 個"
        if data.ndim != 1 or data.shape != indices.shape or indptr.ndim != 1 or len(indptr) < 1:
            return "配列の形が合いません (array shapes)"
        if indptr[0] != 0 or indptr[-1] != len(data) or bool(np.any(np.diff(indptr) < 0)):
            return "indptr が data と合いません"
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(self.ids)):
            return "indices が文書数の範囲外です"
        # bm25s keeps "" as the last vocabulary entry, with no column of its own.
        top = max((i for t, i in self.retriever.vocab_dict.items() if t), default=-1)
        if top >= len(indptr) - 1:
            return f"語彙 ({top + 1} 語) が indptr ({len(indptr)}) と合いません"
        return None

    def search(self, query_tokens: Sequence[str], k: int) -> list[SparseHit]:
        scores = self._score_all(query_tokens) if k > 0 else None
        if scores is None:
            return []
        k = min(k, len(self.ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [SparseHit(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def scores(self, query_tokens: Sequence[str]) -> dict[str, float]:
        """Every chunk with a positive score for these tokens, by ID."""
        scores = self._score_all(query_tokens)
        if scores is None:
            return {}
        return {self.ids[i]: float(scores[i]) for i in np.flatnonzero(scores > 0)}

    def _score_all(self, query_tokens: Sequence[str]) -> np.ndarray | None:
        """Scores of every chunk, or None when the index or the query's known tokens are empty."""
        if not self.ids:
            return None
        token_ids = self.retriever.get_tokens_ids(list(query_tokens))
        return self.retriever.get_scores_from_ids(token_ids) if token_ids else None

    def upper_bound(self, query_tokens: Sequence[str]) -> float:
        """The score a chunk holding every query token at its best would get.

        Sum over the query's tokens (repeats counted, as in scoring) of each token's
        highest score in the index. `score / upper_bound` is the share of the query's
        BM25 evidence a chunk holds (0..1): an absolute scale, used by fusion.
        """
        if not self.ids:
            return 0.0
        token_ids = self.retriever.get_tokens_ids(list(query_tokens))
        if not token_ids:
            return 0.0
        if self._token_max is None:
            data = np.asarray(self.retriever.scores["data"])
            indptr = np.asarray(self.retriever.scores["indptr"])
            tmax = np.zeros(len(indptr) - 1, dtype=np.float64)
            filled = indptr[1:] > indptr[:-1]
            if data.size:
                tmax[filled] = np.maximum.reduceat(data, indptr[:-1][filled])
            self._token_max = tmax
        return float(self._token_max[token_ids].sum())
