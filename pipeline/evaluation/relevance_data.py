"""Question → passage pairs for the reranker (`pipeline.answer.rerank`), from the QA dev sets.

For each question of JSQuAD v1.3 valid, JaQuAD dev and JEMHopQA v1.2, the project's own
hybrid retriever runs over the set's evaluation index (the one `rag eval retrieval` builds
and caches) and its first `candidates` chunks are what the reranker sees at run time. A
chunk of a gold document is relevant (1); the others are hard negatives (0): the best
ranked wrong chunk always, more drawn from the rest of the list. A gold document that the
list missed still gives its best chunk as a positive. The passage is what the reranker
reads (`inputs.passage_text`): the chunk's title line and the window of it that best matches the
question.

Pairs split BY ARTICLE with the claims' seeded hash (`entailment_data.split_of`, same seed,
same groups): the reranker's held-out articles are the checker's, never trained on, and
`rag eval retrieval --rerank` reports on them only (`split_qids`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from pipeline.check.entailment.inputs import passage_text
from pipeline.evaluation.entailment_data import DataConfig, Example, card_roots, split_of

if TYPE_CHECKING:
    from pipeline.evaluation.datasets import Query, RetrievalDataset
    from pipeline.settings import Settings

__all__ = ["RELEVANCE_SETS", "query_groups", "relevance_examples", "split_qids"]

RELEVANCE_SETS = ("jsquad_v1.3_valid", "jaquad_dev", "jemhopqa_v1.2")


def query_groups(queries: Sequence["Query"]) -> dict[str, str]:
    """qid -> its split group: the article (JSQuAD, JaQuAD) or the questions sharing a card (JEMHopQA).

    Paragraph sets name the article in meta; article sets' gold document is the article.
    """
    out: dict[str, str] = {}
    for q in queries:
        if "article_id" in q.meta:
            out[q.qid] = q.meta["article_id"]
        elif "paragraph_doc_id" in q.meta:
            out[q.qid] = q.gold_doc_ids[0]
    # the rest (JEMHopQA): questions sharing a gold card are one group
    root = card_roots(q.gold_doc_ids for q in queries if q.qid not in out)
    for q in queries:
        if q.qid not in out:
            out[q.qid] = f"jemhopqa:{root(q.gold_doc_ids[0])}"
    return out


def split_qids(queries: Sequence["Query"], split: str = "heldout", cfg: DataConfig = DataConfig()) -> set[str]:
    """The questions of one split's articles: "heldout" (never trained on), "val" or "train"."""
    groups = query_groups(queries)
    return {qid for qid, g in groups.items() if split_of(g, cfg.seed, cfg.heldout, cfg.val) == split}


def _examples_of(ds: "RetrievalDataset", index, doc_id: Callable[[str], str], settings: "Settings",
                 cfg: DataConfig, candidates: int, negatives: int, max_chars: int) -> list[Example]:
    from pipeline.index.search import search

    source = ds.name.split("_")[0]
    groups = query_groups(ds.queries)
    chunks_of: dict[str, list] = {}
    for c in index.chunks.values():
        chunks_of.setdefault(doc_id(c.path), []).append(c)
    rng = random.Random(f"{cfg.seed}:{ds.name}:relevance")
    out: list[Example] = []
    for q in ds.queries:
        gold = set(q.gold_doc_ids)
        hits = search(index, q.question, k=candidates, retriever=settings.retriever)
        pos = [(r, h.chunk) for r, h in enumerate(hits) if doc_id(h.chunk.path) in gold]
        neg = [(r, h.chunk) for r, h in enumerate(hits) if doc_id(h.chunk.path) not in gold]
        seen = {doc_id(c.path) for _, c in pos}
        for d in sorted(gold - seen):  # a gold document the list missed: its best matching chunk
            pool = chunks_of.get(d, [])
            if pool:
                best = max(pool, key=lambda c: len(set(q.question) & set(c.text)))
                pos.append((candidates, best))
        pos = pos[: max(1, len(gold))]
        picked = neg[:1] + (rng.sample(neg[1:], min(negatives - 1, len(neg) - 1)) if len(neg) > 1 else [])
        for label, items in ((1, pos), (0, picked)):
            for rank, chunk in items:
                passage = passage_text(chunk.title, chunk.text, q.question, max_chars)
                out.append(Example(passage, q.question, label, source, "gold" if label else "hard", groups[q.qid],
                                   f"{q.qid}:{rank}"))
    return out


def relevance_examples(settings: "Settings", cfg: DataConfig, candidates: int = 20, negatives: int = 2,
                       max_chars: int = 200, sets: Sequence[str] = RELEVANCE_SETS,
                       limit: int | None = None, log: Callable[[str], None] = lambda m: None) -> list[Example]:
    """Relevant and hard-negative (question, passage) pairs of every set in `sets` (premise = passage)."""
    from pipeline.evaluation.datasets import load_retrieval_dataset
    from pipeline.evaluation.retrieval import eval_index

    out: list[Example] = []
    for name in sets:
        ds = load_retrieval_dataset(Path(cfg.evaldata) / name, limit=limit)
        index, doc_id = eval_index(settings, ds)
        made = _examples_of(ds, index, doc_id, settings, cfg, candidates, negatives, max_chars)
        log(f"{name}: {len(made)} pairs from {len(ds.queries)} questions")
        out.extend(made)
    return out
