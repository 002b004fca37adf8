"""`rag eval answers`: answer correctness per mode on a QA set in the evaldata format.

Correctness is containment (a gold answer appears in the answer, after NFKC and
whitespace removal) and character F1 against the best gold answer (SQuAD-style, on
characters because Japanese has no spaces).

Honest refusals: with `unanswerable_from`, questions of another data set are asked
against this one's index (`load_unanswerable`), and the share answered
「資料からは分かりません」 is reported next to the answerable accuracy, with the
answerable questions' own (false) refusal rate beside it.
"""

from __future__ import annotations

import re
import statistics
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from pipeline.answer.engine import Answer
    from pipeline.evaluation.datasets import CorpusDoc, Query
    from pipeline.settings import Settings

_DROP = set(" \t\n\u3000、。，．,.「」『』（）()・")
# Citation markers are not part of the answer: a gold 「2」 is not found in 「…です。[2]」.
_CITATIONS = re.compile(r"\[\d+(?:\s*[,，、]\s*\d+)*\]")


def normalize_answer(text: str) -> str:
    text = _CITATIONS.sub("", unicodedata.normalize("NFKC", text)).lower()
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
    # The same, of the citations as shown (the policy moves a citation to the source that supports it).
    cited_gold_doc_shown: bool | None = None
    citation_recall_shown: float | None = None
    citation_precision_shown: float | None = None
    first_token_seconds: float | None = None  # reading the prompt, before the first generated token
    refused: bool = False  # answered 「分かりません」 or refused by the citation policy
    replaced_answer: str | None = None  # the model's answer the extractive fallback replaced
    contains_before_fallback: bool | None = None  # did the model's own answer contain a gold answer
    # `f1` scores the short answer a one-sentence answer puts first (`Answer.short_answer`);
    # these score it and the sentence the other way round.
    short_answer: str | None = None
    contains_short: bool | None = None
    f1_sentence: float | None = None


def is_refusal(a: "Answer") -> bool:
    """The answer declines: the model said it does not know, or the citation policy refused."""
    from pipeline.answer.prompts import says_unknown

    return bool(a.refused) or says_unknown(a.raw_answer)


@dataclass(frozen=True)
class UnanswerableSet:
    """Questions of one data set to be asked against another's corpus."""

    source: str  # the folder the questions come from
    queries: tuple["Query", ...]
    dropped_as_answerable: int  # gold answer in the target corpus, or gold title = a corpus title
    candidates: int  # source questions considered, before the drop and the limit


def load_unanswerable(
    source_dir: Path, corpus: Sequence["CorpusDoc"], limit: int | None = None
) -> UnanswerableSet:
    """Questions of `source_dir` whose answers are not in `corpus`, `limit` of them evenly spaced.

    Both sides are Wikipedia, so a borrowed question can be answerable by accident. A
    question is dropped when one of its gold answers (after `normalize_answer`) occurs
    in a document of `corpus` (title or text, normalized the same way), or when the
    title of its gold article equals a corpus document's title. The survivors are then
    picked with `spread`, so the set is the same on every run.
    """
    from pipeline.evaluation.datasets import load_retrieval_dataset, spread

    source = load_retrieval_dataset(Path(source_dir))
    # One string, documents apart: \x00 never survives in a normalized answer.
    haystack = "\x00".join(normalize_answer(f"{d.title}\n{d.text}") for d in corpus)
    titles = {normalize_answer(d.title) for d in corpus if normalize_answer(d.title)}
    title_of = {d.doc_id: normalize_answer(d.title) for d in source.corpus}

    def answerable(q: "Query") -> bool:
        golds = [g for g in (normalize_answer(a) for a in q.answers) if g]
        return any(g in haystack for g in golds) or any(title_of[d] in titles for d in q.gold_doc_ids)

    kept = [q for q in source.queries if not answerable(q)]
    return UnanswerableSet(
        source=str(source_dir),
        queries=tuple(spread(kept, limit)),
        dropped_as_answerable=len(source.queries) - len(kept),
        candidates=len(source.queries),
    )


def _record(q: "Query", a: "Answer", doc_id_of: Callable[[str], str] | None) -> AnswerRecord:
    """`doc_id_of` None: the question's gold documents are not in the index (borrowed)."""
    cited_gold_doc = shown_gold_doc = None
    if a.checked is not None and doc_id_of is not None:
        gold = set(q.gold_doc_ids)

        def cites_gold(numbers) -> bool:
            return bool({doc_id_of(s.chunk.path) for s in a.sources if s.number in numbers} & gold)

        cited_gold_doc = cites_gold({n for v in a.checked.verdicts for n in v.sentence.citations})
        from pipeline.answer.engine import shown_citations

        shown_gold_doc = None if a.refused else cites_gold({n for v in a.checked.verdicts for n in shown_citations(v)})
    return AnswerRecord(
        qid=q.qid, question=q.question, golds=tuple(q.answers), answer=a.raw_answer,
        mode=a.mode if not a.fallback_from else f"{a.fallback_from}->{a.mode}",
        contains=contains_answer(a.raw_answer, q.answers), f1=char_f1(a.short_answer or a.raw_answer, q.answers),
        seconds=a.seconds, tokens_read=a.tokens_read,
        cited_gold_doc=cited_gold_doc,
        citation_recall=a.checked.citation_recall if a.checked else None,
        citation_precision=a.checked.citation_precision if a.checked else None,
        cited_gold_doc_shown=shown_gold_doc,
        citation_recall_shown=a.citation_recall,
        citation_precision_shown=a.citation_precision,
        first_token_seconds=a.first_token_seconds,
        refused=is_refusal(a),
        replaced_answer=a.replaced_answer,
        contains_before_fallback=contains_answer(a.replaced_answer or a.raw_answer, q.answers),
        short_answer=a.short_answer,
        contains_short=contains_answer(a.short_answer or a.raw_answer, q.answers),
        f1_sentence=char_f1(a.raw_answer, q.answers),
    )


def run_answer_eval(
    settings: "Settings",
    data_dir: Path,
    mode: str = "auto",
    limit: int | None = 30,
    backend: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    unanswerable_from: Path | None = None,
    unanswerable_limit: int | None = None,
    docs: int | None = None,
) -> dict:
    """Answer `limit` questions of `data_dir` against its corpus and score them.

    `unanswerable_from`: a second evaldata folder whose questions (`load_unanswerable`,
    `unanswerable_limit` of them, all when None) are then asked against the same index;
    the report's `unanswerable` says how many were refused.
    """
    from pipeline.answer.engine import Answerer
    from pipeline.evaluation.datasets import load_retrieval_dataset
    from pipeline.evaluation.retrieval import eval_index

    data = load_retrieval_dataset(Path(data_dir), limit=limit, docs=docs)
    borrowed = (
        load_unanswerable(Path(unanswerable_from), data.corpus, unanswerable_limit)
        if unanswerable_from is not None
        else None
    )
    total = len(data.queries) + (len(borrowed.queries) if borrowed else 0)
    t0 = time.time()
    snapshot, doc_id_of = eval_index(settings, data)
    index_seconds = time.time() - t0
    answerer = Answerer.from_settings(snapshot.settings, backend=backend, index=snapshot)
    records: list[AnswerRecord] = []
    for q in data.queries:
        records.append(_record(q, answerer.ask(q.question, mode=mode), doc_id_of))
        if progress:
            progress(len(records), total)
    unanswerable_records: list[AnswerRecord] = []
    for q in borrowed.queries if borrowed else ():
        unanswerable_records.append(_record(q, answerer.ask(q.question, mode=mode), None))
        if progress:
            progress(len(records) + len(unanswerable_records), total)
    report = summarize(records, n_docs=len(data.corpus), backend=answerer.backend.info.name,
                       requested_mode=mode, index_seconds=index_seconds)
    report["unanswerable"] = summarize_unanswerable(unanswerable_records, borrowed) if borrowed else None
    report["unanswerable_records"] = [r.__dict__ for r in unanswerable_records]
    return report


def refusal_rate(records: Sequence[AnswerRecord]) -> float | None:
    return round(sum(r.refused for r in records) / len(records), 4) if records else None


def summarize_unanswerable(records: Sequence[AnswerRecord], borrowed: UnanswerableSet) -> dict:
    return {
        "n_queries": len(records),
        "refused": sum(r.refused for r in records),
        "refusal_rate": refusal_rate(records),
        "dropped_as_answerable": borrowed.dropped_as_answerable,
        "candidates": borrowed.candidates,
        "source": borrowed.source,
    }


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
        "contains_short": mean([None if r.contains_short is None else float(r.contains_short) for r in records]),
        "char_f1_sentence": mean([r.f1_sentence for r in records]),
        "cited_gold_doc": mean([None if r.cited_gold_doc is None else float(r.cited_gold_doc) for r in records]),
        "citation_recall": mean([r.citation_recall for r in records]),
        "citation_precision": mean([r.citation_precision for r in records]),
        "cited_gold_doc_shown": mean(
            [None if r.cited_gold_doc_shown is None else float(r.cited_gold_doc_shown) for r in records]
        ),
        "citation_recall_shown": mean([r.citation_recall_shown for r in records]),
        "citation_precision_shown": mean([r.citation_precision_shown for r in records]),
        "refusal_rate": refusal_rate(records),  # of answerable questions: false refusals
        "extractive_fallbacks": sum(r.replaced_answer is not None for r in records),
        "contains_before_fallback": mean(
            [None if r.contains_before_fallback is None else float(r.contains_before_fallback) for r in records]
        ),
        "modes": dict(modes),
        "tokens_read_mean": mean([float(r.tokens_read) for r in records]),
        "seconds_per_question": mean([r.seconds for r in records]),
        "median_seconds": round(statistics.median(r.seconds for r in records), 2) if records else None,
        "records": [r.__dict__ for r in records],
    }
