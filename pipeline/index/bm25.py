"""Japanese BM25 over MeCab content-word lemmas (bm25s), saved as plain files.

Stock tokenizers split on `\\w\\w+` and score every Japanese query 0; here the
tokens are the lemmas `pipeline.japanese` gives, computed once per chunk at ingest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

IDS_FILE = "chunk_ids.json"
EMPTY_TOKEN = "\u2205"  # keeps bm25s happy with a chunk that has no content word


@dataclass(frozen=True)
class SparseHit:
    chunk_id: str
    score: float


class BM25Index:
    def __init__(self, ids: list[str], retriever) -> None:
        self.ids = ids
        self.retriever = retriever

    @classmethod
    def build(cls, ids: Sequence[str], tokens: Sequence[Sequence[str]]) -> "BM25Index":
        import bm25s

        retriever = bm25s.BM25()
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

    def search(self, query_tokens: Sequence[str], k: int) -> list[SparseHit]:
        if not self.ids or k <= 0:
            return []
        token_ids = self.retriever.get_tokens_ids(list(query_tokens))
        if not token_ids:
            return []
        scores = self.retriever.get_scores_from_ids(token_ids)
        k = min(k, len(self.ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [SparseHit(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]
