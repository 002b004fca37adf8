"""The checker's semantic stage: how close in meaning a claim is to a cited source.

The cheap signals (`pipeline.check.features`) read words, numbers and case roles; a
semantic stage reads meaning (料理 ⊂ 食べ物). It is one method, `score(groups, claims,
pairs=None)`: for each group of source sentences (the evidence of one cited source), an
array of shape ``(len(claims), len(group))``. The checker asks once per answer, with every
claim and every cited source, so a stage can batch the work; `pairs` names the (claim,
group) pairs it needs, and a stage that pays per pair leaves the others' rows NaN.

`mode` names the checker mode (and the fitted weights in ``fitted.json`` the checker
combines with the stage, when the mode has any) and `feature` the feature it adds after
the cheap ones. Two stages:

* `EntailmentStage` (mode "entailment"): P(entailed | cited source, claim) from the
  cross-encoder trained here (`pipeline.check.entailment`), once per (claim, source), the
  same value for every sentence of the source. It is calibrated on its own and brings its
  threshold; the checker reads it directly (see `CitationChecker`).
* `EmbeddingSimilarity` (mode "embed", feature "cosine"): the cosine of the claim and each
  sentence, from any `Embedder`, weighed with the cheap signals by the fitted model.

`choose_stage(settings, embedder)` picks one by ``settings.citation_model``: "auto" takes
the entailment model when its artifact loads and falls back to the embedder, with a
warning, when it does not.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Collection, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from pipeline.index.embedder import Embedder
    from pipeline.settings import Settings

__all__ = [
    "ENTAILMENT_MODE",
    "EmbeddingSimilarity",
    "EntailmentStage",
    "SemanticStage",
    "choose_stage",
    "join_sentences",
]

log = logging.getLogger(__name__)

ENTAILMENT_MODE = "entailment"
# Sentence ends after which the next sentence follows on the same line.
_SENTENCE_ENDS = ("。", "！", "？", "!", "?", "」", "』", "）", ")")


class SemanticStage(Protocol):
    mode: str  # the checker mode (the fitted model's name in fitted.json, if it has one)
    feature: str  # the feature it adds (FEATURES[mode][-1])

    def score(self, groups: Sequence[Sequence[str]], claims: Sequence[str],
              pairs: Collection[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """For each group of sentences, a (len(claims), len(group)) array of scores.

        `pairs`: the (claim index, group index) pairs needed (None: all); rows of the
        others may be NaN."""
        ...


class EmbeddingSimilarity:
    """Cosine of normalized passage embeddings, all texts of a check in one embedder call.

    Embeddings cost per text, not per pair: every pair is scored, whatever `pairs` says."""

    mode = "embed"
    feature = "cosine"

    def __init__(self, embedder: "Embedder"):
        self.embedder = embedder

    def score(self, groups: Sequence[Sequence[str]], claims: Sequence[str],
              pairs: Collection[tuple[int, int]] | None = None) -> list[np.ndarray]:
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


def join_sentences(sentences: Sequence[str]) -> str:
    """A source's evidence sentences as one text: run on after 。 and the like, else a new line."""
    out = ""
    for s in sentences:
        if out and not out.endswith(_SENTENCE_ENDS):
            out += "\n"
        out += s
    return out


class EntailmentStage:
    """P(entailed) of each (cited source, claim) pair from an entailment model.

    `model` is a `pipeline.check.entailment.EntailmentModel` or anything with
    ``score([(premise, hypothesis), …]) -> [P(entailed), …]`` and a ``threshold``. The
    premise is the source's evidence sentences joined (instructions to the model left
    out, as everywhere in the checker); the model cuts its own window from it. One model
    call per `score`, every needed pair in it; each pair's P fills its row.
    """

    mode = ENTAILMENT_MODE
    feature = "entailment"

    def __init__(self, model):
        self.model = model

    @property
    def threshold(self) -> float:
        """P(entailed) below which the model calls a claim unsupported (its config.json)."""
        return float(self.model.threshold)

    @classmethod
    def load(cls, settings: "Settings") -> "EntailmentStage":
        """The shipped artifact; `ModelUnavailable` (naming the file and `make train-checker`) if it cannot load."""
        from pipeline.check.entailment import EntailmentModel

        return cls(EntailmentModel.load(settings))

    def score(self, groups: Sequence[Sequence[str]], claims: Sequence[str],
              pairs: Collection[tuple[int, int]] | None = None) -> list[np.ndarray]:
        out = [np.full((len(claims), len(group)), np.nan) for group in groups]
        if pairs is None:
            pairs = [(i, g) for g in range(len(groups)) for i in range(len(claims))]
        wanted = [(i, g) for i, g in sorted(pairs) if len(groups[g])]
        if not wanted:
            return out
        premises = {g: join_sentences(groups[g]) for _, g in wanted}
        probabilities = self.model.score([(premises[g], claims[i]) for i, g in wanted])
        for (i, g), p in zip(wanted, probabilities):
            out[g][i, :] = float(p)
        return out


def choose_stage(settings: "Settings", embedder: "Callable[[], Embedder | None] | None" = None,
                 ) -> "tuple[SemanticStage | None, str | None]":
    """The semantic stage ``settings.citation_model`` asks for, and why it fell back (None: it did not).

    `embedder` is called only when the embedding stage is the one used (loading one costs
    seconds). "entailment" fails with `ModelUnavailable` when the artifact cannot load;
    "auto" then falls back to the embedder (or to the cheap signals without one) and logs
    a warning that names the mode in use.
    """
    from pipeline.errors import ModelUnavailable

    choice = settings.citation_model
    if choice == "cheap":
        return None, None

    def embedding() -> SemanticStage | None:
        e = embedder() if embedder is not None else None
        return EmbeddingSimilarity(e) if e is not None else None

    if choice == "embedding":
        return embedding(), None
    try:
        return EntailmentStage.load(settings), None
    except ModelUnavailable as err:
        if choice == ENTAILMENT_MODE:
            raise
        stage = embedding()
        used = stage.mode if stage is not None else "cheap"
        note = f"含意モデルが使えないため、引用チェックは {used} モードで行います。\n{err}"
        log.warning(note)
        return stage, note
