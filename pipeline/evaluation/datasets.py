"""Evaluation data on disk: corpus, queries and NLI pairs in JSON Lines, as typed values.

The format is the one of `../shared/evaldata/README.md`:

    corpus.jsonl    {"doc_id", "title", "text"}
    queries.jsonl   {"qid", "question", "answers": [str], "gold_doc_ids": [str], "meta": {...}}
    pairs.jsonl     {"premise", "hypothesis", "label", "pair_id", "meta"}

A line that is not valid JSON or lacks a required field raises `ReadError` naming
the file and the line, so a broken data set fails loudly before any indexing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pipeline.errors import ReadError

__all__ = [
    "CORPUS_FILE",
    "PAIRS_FILE",
    "QUERIES_FILE",
    "CorpusDoc",
    "NLIPair",
    "Query",
    "RetrievalDataset",
    "load_corpus",
    "load_pairs",
    "load_queries",
    "load_retrieval_dataset",
    "spread",
]

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
PAIRS_FILE = "pairs.jsonl"


@dataclass(frozen=True)
class CorpusDoc:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class Query:
    qid: str
    question: str
    answers: tuple[str, ...]
    gold_doc_ids: tuple[str, ...]
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class NLIPair:
    pair_id: str
    premise: str
    hypothesis: str
    label: str
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class RetrievalDataset:
    """A corpus and its questions, read from one folder."""

    name: str  # the folder's name, e.g. "jsquad_v1.3_valid"
    path: Path
    corpus: tuple[CorpusDoc, ...]
    queries: tuple[Query, ...]
    corpus_sha256: str  # of corpus.jsonl's bytes: keys the evaluation index cache


def _records(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ReadError(str(path), "ファイルがありません (not found)") from None
    except UnicodeDecodeError as err:
        raise ReadError(str(path), f"UTF-8 ではありません (not UTF-8: {err.reason})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReadError(f"{path}:{n}", f"JSON として読めません (invalid JSON: {err.msg})") from None
        if not isinstance(rec, dict):
            raise ReadError(f"{path}:{n}", "JSON オブジェクトではありません (not an object)")
        missing = [k for k in required if k not in rec]
        if missing:
            raise ReadError(
                f"{path}:{n}", f"項目がありません (missing field): {', '.join(missing)}"
            )
        yield rec


def load_corpus(path: Path) -> list[CorpusDoc]:
    docs = [
        CorpusDoc(str(r["doc_id"]), str(r.get("title") or ""), str(r["text"]))
        for r in _records(Path(path), ("doc_id", "text"))
    ]
    seen: set[str] = set()
    for d in docs:
        if d.doc_id in seen:
            raise ReadError(str(path), f"doc_id が重複しています (duplicate doc_id): {d.doc_id}")
        seen.add(d.doc_id)
    return docs


def load_queries(path: Path) -> list[Query]:
    return [
        Query(
            qid=str(r["qid"]),
            question=str(r["question"]),
            answers=tuple(str(a) for a in r.get("answers") or ()),
            gold_doc_ids=tuple(str(g) for g in r["gold_doc_ids"]),
            meta=dict(r.get("meta") or {}),
        )
        for r in _records(Path(path), ("qid", "question", "gold_doc_ids"))
    ]


def load_pairs(path: Path) -> list[NLIPair]:
    return [
        NLIPair(
            pair_id=str(r.get("pair_id", n)),
            premise=str(r["premise"]),
            hypothesis=str(r["hypothesis"]),
            label=str(r["label"]),
            meta=dict(r.get("meta") or {}),
        )
        for n, r in enumerate(_records(Path(path), ("premise", "hypothesis", "label")))
    ]


def spread(items: list, limit: int | None) -> list:
    """`limit` items evenly spaced through `items`, in order (all of them when None).

    Evenly spaced rather than the first N: question files are grouped by article, so
    a head would test a handful of topics.
    """
    if limit is not None and limit < 0:
        from pipeline.errors import InvalidInput

        raise InvalidInput(f"--limit は 0 以上にしてください: {limit}")
    if limit is None or limit >= len(items):
        return list(items)
    if limit == 0:
        return []
    return [items[(i * len(items)) // limit] for i in range(limit)]


def load_retrieval_dataset(data_dir: Path, limit: int | None = None, docs: int | None = None) -> RetrievalDataset:
    """corpus.jsonl + queries.jsonl of `data_dir`; `limit` keeps that many queries (`spread`).

    `docs` keeps that many documents (`spread`) and only the questions whose gold documents
    are all among them: a corpus small enough for a model's window, to compare long context
    with retrieval on the same questions.

    Every gold doc_id must be in the corpus: a question whose gold document is missing
    could never be answered and would quietly lower every score.
    """
    data_dir = Path(data_dir)
    corpus_path = data_dir / CORPUS_FILE
    corpus = load_corpus(corpus_path)
    queries = load_queries(data_dir / QUERIES_FILE)
    ids = {d.doc_id for d in corpus}
    for q in queries:
        unknown = [g for g in q.gold_doc_ids if g not in ids]
        if unknown or not q.gold_doc_ids:
            raise ReadError(
                str(data_dir / QUERIES_FILE),
                f"{q.qid}: 正解文書がコーパスにありません (gold doc not in corpus): "
                f"{', '.join(unknown) or '(none)'}",
            )
    digest = hashlib.sha256(corpus_path.read_bytes())
    name = data_dir.resolve().name
    if docs is not None:
        corpus = spread(corpus, docs)
        kept = {d.doc_id for d in corpus}
        queries = [q for q in queries if set(q.gold_doc_ids) <= kept]
        digest.update("\0".join(sorted(kept)).encode())  # the evaluation index is this subset's
        name = f"{name}-docs{docs}"
    return RetrievalDataset(
        name=name,
        path=data_dir,
        corpus=tuple(corpus),
        queries=tuple(spread(queries, limit)),
        corpus_sha256=digest.hexdigest(),
    )
