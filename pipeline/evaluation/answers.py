"""`rag eval answers`: answer correctness per mode on a QA set in the evaldata format.

Correctness is containment (a gold answer appears in the answer, after NFKC and
whitespace removal) and character F1 against the best gold answer (SQuAD-style, on
characters because Japanese has no spaces).
"""

from __future__ import annotations

import statistics
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from pipeline.settings import Settings

_DROP = set(" \t\n\u3000、。，．,.「」『』（）()・")


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if ch not in _DROP)


def contains_answer(prediction: str, golds: Sequence[str]) -> bool:
    p = normalize_answer(prediction)
    return any(normalize_answer(g) and normalize_answer(g) in p for g in golds)


def char_f1(prediction: str, golds: Sequence[str]) -> float:
    p = normalize_answer(prediction)
    best = 0.0
    for g in golds:
        g = normalize_answer(g)
        if not p or not g:
            continue
        common = sum((Counter(p) & Counter(g)).values())
        if common == 0:
            continue
        precision, recall = common / len(p), common / len(g)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass(frozen=True)
class AnswerRecord:
    qid: str
    question: str
    golds: tuple[str, ...]
    answer: str
    mode: str
    contains: bool
    f1: float
    seconds: float
    tokens_read: int
    cited_gold_doc: bool | None
    citation_recall: float | None
    citation_precision: float | None


def run_answer_eval(
    settings: "Settings",
    data_dir: Path,
    mode: str = "auto",
    limit: int | None = 30,
    backend: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    from pipeline.answer.engine import Answerer
    from pipeline.evaluation.datasets import load_retrieval_dataset
    from pipeline.evaluation.retrieval import eval_index

    data = load_retrieval_dataset(Path(data_dir), limit=limit)
    t0 = time.time()
    snapshot, doc_id_of = eval_index(settings, data)
    index_seconds = time.time() - t0
    answerer = Answerer.from_settings(snapshot.settings, backend=backend, index=snapshot)
    records: list[AnswerRecord] = []
    for i, q in enumerate(data.queries):
        a = answerer.ask(q.question, mode=mode)
        cited_docs = set()
        if a.checked is not None:
            cited = {n for v in a.checked.verdicts for n in v.sentence.citations}
            cited_docs = {doc_id_of(s.chunk.path) for s in a.sources if s.number in cited}
        records.append(
            AnswerRecord(
                qid=q.qid, question=q.question, golds=tuple(q.answers), answer=a.raw_answer,
                mode=a.mode if not a.fallback_from else f"{a.fallback_from}->{a.mode}",
                contains=contains_answer(a.raw_answer, q.answers), f1=char_f1(a.raw_answer, q.answers),
                seconds=a.seconds, tokens_read=a.tokens_read,
                cited_gold_doc=bool(cited_docs & set(q.gold_doc_ids)) if a.checked is not None else None,
                citation_recall=a.checked.citation_recall if a.checked else None,
                citation_precision=a.checked.citation_precision if a.checked else None,
            )
        )
        if progress:
            progress(i + 1, len(data.queries))
    return summarize(records, n_docs=len(data.corpus), backend=answerer.backend.info.name,
                     requested_mode=mode, index_seconds=index_seconds)


def summarize(records: Sequence[AnswerRecord], **extra) -> dict:
    def mean(xs):
        xs = [x for x in xs if x is not None]
        return round(statistics.fmean(xs), 4) if xs else None

    modes = Counter(r.mode for r in records)
    return {
        **extra,
        "n_queries": len(records),
        "contains": mean([float(r.contains) for r in records]),
        "char_f1": mean([r.f1 for r in records]),
        "cited_gold_doc": mean([None if r.cited_gold_doc is None else float(r.cited_gold_doc) for r in records]),
        "citation_recall": mean([r.citation_recall for r in records]),
        "citation_precision": mean([r.citation_precision for r in records]),
        "modes": dict(modes),
        "tokens_read_mean": mean([float(r.tokens_read) for r in records]),
        "seconds_per_question": mean([r.seconds for r in records]),
        "records": [r.__dict__ for r in records],
    }
