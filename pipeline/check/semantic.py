"""The checker's semantic stage: how close in meaning a claim is to each source sentence.

The cheap signals (`pipeline.check.features`) read words, numbers and case roles; a
semantic stage reads meaning (料理 ⊂ 食べ物). It is one method, `score(groups, claims)`:
for each group of source sentences (the evidence of one cited source), an array of
shape ``(len(claims), len(group))``. The checker asks once per answer, with every claim
and every cited source, so a stage can batch the work.

`mode` names the fitted weights the checker uses with the stage (``fitted.json``
holds one model per mode) and `feature` the feature it adds after the cheap ones.
`EmbeddingSimilarity` (mode "embed", feature "cosine") is the stage today: the cosine
of the claim and the sentence, from any `Embedder`. A model that scores pairs (a
cross-encoder giving P(entailed)) fits the same protocol under a mode of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from pipeline.index.embedder import Embedder

__all__ = ["EmbeddingSimilarity", "SemanticStage"]


class SemanticStage(Protocol):
    mode: str  # the fitted model's name in fitted.json
    feature: str  # the feature it adds (FEATURES[mode][-1])

    def score(self, groups: Sequence[Sequence[str]], claims: Sequence[str]) -> list[np.ndarray]:
        """For each group of sentences, a (len(claims), len(group)) array of scores."""
        ...


class EmbeddingSimilarity:
    """Cosine of normalized passage embeddings, all texts of a check in one embedder call."""

    mode = "embed"
    feature = "cosine"

    def __init__(self, embedder: "Embedder"):
        self.embedder = embedder

    def score(self, groups: Sequence[Sequence[str]], claims: Sequence[str]) -> list[np.ndarray]:
        texts = [t for group in groups for t in group] + list(claims)
        if not texts:
            return [np.zeros((0, 0)) for _ in groups]
        vectors = np.asarray(self.embedder.embed_passages(texts))
        claim_vectors = vectors[len(texts) - len(claims):]
        out, k = [], 0
        for group in groups:
            sentences = vectors[k:k + len(group)]
            k += len(group)
            rows = [sentences @ c for c in claim_vectors]
            out.append(np.array(rows).reshape(len(claims), len(group)))
        return out
