"""What the checker finds: a `Verdict` per answer sentence, a `CheckedAnswer` per answer.

Both are frozen values with `to_dict()`, the JSON shape `rag ask --json` and the API
show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.check.citations import AnswerSentence
from pipeline.documents import Span

__all__ = ["CheckedAnswer", "Label", "Verdict"]

Label = Literal["supported", "unsupported", "uncited", "supported_by_other"]


@dataclass(frozen=True)
class Verdict:
    """The checker's finding on one answer sentence."""

    sentence: AnswerSentence
    label: Label
    score: float  # calibrated P(the cited sources support the sentence); for uncited, the best source's
    cited: tuple[int, ...]  # source numbers the sentence cites (only those that exist)
    fixed_citations: tuple[int, ...]  # sources that do support it (supported: the needed citations)
    reasons: tuple[str, ...]  # short Japanese reasons for a flag: 数値の不一致: 13B
    spans: tuple[Span, ...]  # best-matching sentence inside each cited chunk, for highlighting

    def to_dict(self) -> dict:
        return {
            "text": self.sentence.text,
            "start": self.sentence.start,
            "end": self.sentence.end,
            "citations": list(self.sentence.citations),
            "verdict": self.label,
            "score": round(self.score, 4),
            "fixed_citations": list(self.fixed_citations),
            "reasons": list(self.reasons),
            "spans": [
                {"path": s.path, "start": s.start, "end": s.end, "lines": list(s.lines)} for s in self.spans
            ],
        }


@dataclass(frozen=True)
class CheckedAnswer:
    verdicts: list[Verdict]
    citation_recall: float  # ALCE: share of sentences whose citations together support them
    citation_precision: float  # ALCE: share of citations that are needed and support their sentence
    supported_fraction: float  # share of sentences supported (by their citations or another source)

    @staticmethod
    def of(verdicts: list[Verdict]) -> "CheckedAnswer":
        """The verdicts with ALCE citation recall and precision and the share supported."""
        if not verdicts:
            return CheckedAnswer([], 1.0, 1.0, 1.0)
        recall = sum(v.label == "supported" for v in verdicts) / len(verdicts)
        n_cit = sum(len(v.cited) for v in verdicts)
        good = sum(len(v.fixed_citations) for v in verdicts if v.label == "supported")
        precision = good / n_cit if n_cit else 0.0
        supported = sum(v.label in ("supported", "supported_by_other") for v in verdicts) / len(verdicts)
        return CheckedAnswer(verdicts, recall, precision, supported)

    def to_dict(self) -> dict:
        return {
            "citation_recall": round(self.citation_recall, 4),
            "citation_precision": round(self.citation_precision, 4),
            "supported_fraction": round(self.supported_fraction, 4),
            "sentences": [v.to_dict() for v in self.verdicts],
        }
