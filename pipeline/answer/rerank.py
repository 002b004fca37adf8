"""The shipped reranker: a Japanese cross-encoder re-orders the retriever's first candidates.

    reranker = cross_encoder(settings)                    # the `reranker` setting's default
    reranker.rerank("Ollamaの既定のポートは？", chunks)     # best first; score = P(relevant)

The model (`pipeline/models/reranker/`, rebuilt by `make train-reranker`) is the citation
checker's backbone, multilingual-e5-small, with its own top layers and head trained on
question → passage pairs with hard negatives from our own hybrid lists. It reads what it
was trained on: each chunk's title line and the window that best matches the question
(`passage_text`).

The retriever's order is kept as a prior: a chunk's final score is logit(P) minus
`RANK_WEIGHT` · log(1 + its rank in the fused list), so the model moves a passage up
only when it is clearly better. The weight was chosen on the validation articles
(`benchmarks/rerank_weight.py --split val`), never on the reported held-out ones.

Loading costs a torch import and the base model (≈ 2 s); a process loads it once.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pipeline.check.entailment import EntailmentModel
from pipeline.check.entailment.artifact import RERANKER_DIR
from pipeline.check.entailment.inputs import passage_text
from pipeline.documents import ScoredChunk

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = ["RANK_WEIGHT", "CrossEncoderReranker", "cross_encoder"]

RANK_WEIGHT = 2.0  # chosen on the validation articles: benchmarks/results/rerank.md
_EPS = 1e-6

_loaded: dict[tuple[str, str], "CrossEncoderReranker"] = {}
_lock = threading.Lock()


class CrossEncoderReranker:
    """Re-scores (question, chunk) pairs with the relevance cross-encoder."""

    def __init__(self, model: EntailmentModel, rank_weight: float = RANK_WEIGHT, follow_links: bool = True):
        self.model = model
        self.rank_weight = rank_weight
        self.follow_links = follow_links

    def scores(self, query: str, chunks: Sequence[ScoredChunk]) -> list[float]:
        """P(the chunk answers `query`), in the given order."""
        chars = self.model.config.premise_chars
        passages = [passage_text(sc.chunk.title, sc.chunk.text, query, chars) for sc in chunks]
        return self.model.score([(p, query) for p in passages])

    def rerank(self, query: str, chunks: Sequence[ScoredChunk]) -> list[ScoredChunk]:
        if len(chunks) < 2:
            return list(chunks)
        return self.order(chunks, self.scores(query, chunks))

    def order(self, chunks: Sequence[ScoredChunk], probs: Sequence[float]) -> list[ScoredChunk]:
        """`chunks` (in the retriever's order) by logit(P) − rank_weight · log(1 + rank); score = P.

        A chunk the second hop brought (`linked_from`) ranks at least just below the hit that
        names it: it answers what that hit leaves open, which the question's words do not show.
        """
        keyed = []
        for rank, (sc, p) in enumerate(zip(chunks, probs)):
            p = min(max(p, _EPS), 1 - _EPS)
            keyed.append([math.log(p / (1 - p)) - self.rank_weight * math.log1p(rank), rank, sc, p])
        if self.follow_links:
            key_of = {t[2].chunk.id: t[0] for t in keyed}
            for t in keyed:
                source = t[2].linked_from
                if source in key_of:
                    t[0] = max(t[0], key_of[source] - 1e-6)
        keyed.sort(key=lambda t: (-t[0], t[1]))
        return [ScoredChunk(sc.chunk, p, sc.linked_from) for _, _, sc, p in keyed]


def cross_encoder(settings: "Settings", folder: Path = RERANKER_DIR) -> CrossEncoderReranker:
    """The shipped reranker (loaded once per process and model folder)."""
    key = (str(settings.cache_dir), str(folder))
    with _lock:
        if key not in _loaded:
            _loaded[key] = CrossEncoderReranker(EntailmentModel.load(settings, folder, task="relevance"))
        return _loaded[key]
