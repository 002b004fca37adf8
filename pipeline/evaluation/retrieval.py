"""`rag eval retrieval`: index a corpus with the project's own pipeline, run its questions, score.

    DATA_DIR/corpus.jsonl + queries.jsonl
      -> one Markdown file per document (front matter `title:`, then the text verbatim)
      -> Ingestor (readers, Japanese chunker, embedder, Chroma, BM25) into a cache folder
      -> for each question and retriever: chunks -> doc_ids (a document ranks at its best chunk)
      -> Recall@1/5/10, MRR@10, nDCG@10, latency p50/p95

The index lives under `settings.cache_dir / "eval"`, keyed by the sha256 of corpus.jsonl,
the settings that shape chunks and vectors, and the code that builds the index (`INDEX_CODE`),
so a re-run reuses it and the user's own index is never touched. Passage vectors are also cached by text
(`vectors.sqlite3`), so a change that re-chunks only part of a corpus embeds only that part.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from pipeline.evaluation.datasets import CorpusDoc, RetrievalDataset, load_retrieval_dataset
from pipeline.evaluation.embed_cache import CachingEmbedder, open_vector_cache
from pipeline.evaluation.metrics import dedupe, mean_scores, percentile, score_query

if TYPE_CHECKING:
    from pipeline.index.embedder import Embedder
    from pipeline.index.rerank import Reranker
    from pipeline.index.snapshot import IndexSnapshot
    from pipeline.settings import Settings

__all__ = [
    "DOC_FORMAT_VERSION",
    "EvalProgress",
    "PreparedIndex",
    "RetrievalReport",
    "doc_filename",
    "eval_index",
    "evaluate_retrieval",
    "prepare_index",
    "rank_documents",
    "render_document",
]

DOC_FORMAT_VERSION = 1  # bump when render_document / doc_filename change
DEPTH = 10  # documents needed per question (the deepest cutoff)
CHUNK_DEPTH = 50  # chunks asked for first; doubled while fewer than DEPTH documents come back
META_FILE = "eval-index.json"
ALL_RETRIEVERS = ("bm25", "dense", "hybrid")
WARM_UP_QUESTION = "検索の準備はできていますか？"


class EvalProgress(Protocol):
    """Where the runner reports what it is doing (the CLI draws a bar on stderr)."""

    def start(self, label: str, total: int) -> None: ...
    def advance(self) -> None: ...
    def log(self, message: str) -> None: ...


class SilentProgress:
    def start(self, label: str, total: int) -> None: ...
    def advance(self) -> None: ...
    def log(self, message: str) -> None: ...


class _IngestReporter:
    """Ingestor's reporter, forwarded to an EvalProgress."""

    def __init__(self, progress: EvalProgress):
        self.progress = progress

    def start(self, total: int) -> None:
        self.progress.start("indexing", total)

    def advance(self, path: str) -> None:
        self.progress.advance()

    def embedded(self, chunks: int) -> None: ...

    def log(self, message: str) -> None:
        self.progress.log(message)


# --------------------------------------------------------------------------- corpus -> files


def doc_filename(doc_id: str) -> str:
    """A safe, reversible-looking file name for a doc_id (the runner keeps its own map).

    ASCII letters, digits, `-` and `_` are kept; every other byte of the UTF-8 form becomes
    `%XX`. Very long IDs are cut and get a hash suffix. Never starts with a dot (a scan
    skips hidden files).
    """
    out = "".join(
        chr(b) if (chr(b).isascii() and chr(b).isalnum()) or chr(b) in "-_" else f"%{b:02X}"
        for b in doc_id.encode("utf-8")
    )
    if len(out) > 150:
        out = out[:120] + "~" + hashlib.sha256(doc_id.encode()).hexdigest()[:16]
    return (out or "%") + ".md"


def render_document(doc: CorpusDoc) -> str:
    """Markdown the project's reader reads back as title = doc.title, body = doc.text."""
    title = " ".join(doc.title.split())
    if not title:
        return doc.text
    quoted = '"' + title + '"'
    return f"---\ntitle: {quoted}\n---\n{doc.text}"


def _write_if_changed(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return  # keep the mtime: the ingest then skips the file without reading it
    except FileNotFoundError:
        pass
    path.write_bytes(data)


# --------------------------------------------------------------------------- the index


@dataclass
class PreparedIndex:
    index_dir: Path
    doc_of_file: dict[str, str]  # file name -> doc_id
    indexing_s: float  # wall time of the ingest that built it
    cached: bool  # reused from an earlier run
    n_chunks: int
    skipped: list[dict] = field(default_factory=list)  # documents the reader refused
    vectors_computed: int = 0  # passage vectors embedded by that ingest (the rest came from the cache)

    def doc_id(self, path: str) -> str:
        return self.doc_of_file[Path(path).name]


# The modules whose code decides what goes into an index: an index built by other code
# (another tokenizer, chunker or reader) is never reused. Vectors are reused anyway,
# through the vector cache, so a rebuild re-reads and re-tokenizes but embeds nothing new.
INDEX_CODE = (
    "pipeline/documents.py",
    "pipeline/japanese.py",
    "pipeline/ingest/readers",  # a package: every .py file in it
    "pipeline/ingest/chunker.py",
    "pipeline/ingest/sync.py",
    "pipeline/index/bm25.py",
    "pipeline/index/manifest.py",
)


def _code_digest() -> str:
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for rel in INDEX_CODE:
        path = root / rel
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            name = f.relative_to(root).as_posix()
            h.update(name.encode() + b"\0" + (f.read_bytes() if f.exists() else b""))
    return h.hexdigest()


def cache_key(ds: RetrievalDataset, settings: "Settings") -> str:
    """sha256 of everything that shapes the evaluation index of `ds`."""
    from pipeline.ingest.sync import fingerprint

    shape = {
        "corpus_sha256": ds.corpus_sha256,
        "fingerprint": fingerprint(settings),
        "embed_prefixes": [settings.embed_passage_prefix],
        "hnsw": [settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search],
        "doc_format": DOC_FORMAT_VERSION,
        "code": _code_digest(),
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


def eval_settings(settings: "Settings", index_dir: Path) -> "Settings":
    """The user's settings pointed at the evaluation index, always with embedded Chroma."""
    return settings.model_copy(update={"index_dir": str(index_dir), "chroma_host": None})


def prepare_index(
    ds: RetrievalDataset,
    settings: "Settings",
    embedder: "Embedder",
    progress: EvalProgress | None = None,
) -> PreparedIndex:
    """Build (or reuse) the evaluation index of `ds` under settings.cache_dir/eval."""
    from filelock import FileLock

    from pipeline.ingest.sync import Ingestor

    progress = progress or SilentProgress()
    key = cache_key(ds, settings)
    root = Path(settings.cache_dir) / "eval" / f"{_safe_name(ds.name)}-{key[:16]}"
    root.mkdir(parents=True, exist_ok=True)
    docs_dir, index_dir, meta_path = root / "docs", root / "index", root / META_FILE
    with FileLock(str(root / ".prepare.lock")):
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            return PreparedIndex(
                index_dir, meta["doc_of_file"], meta["indexing_s"], True, meta["n_chunks"],
                meta["skipped"], meta.get("vectors_computed", 0),
            )
        docs_dir.mkdir(exist_ok=True)
        doc_of_file: dict[str, str] = {}
        for doc in ds.corpus:
            name = doc_filename(doc.doc_id)
            if name in doc_of_file:  # two IDs cut to the same name: very long and alike
                name = hashlib.sha256(doc.doc_id.encode()).hexdigest()[:40] + ".md"
            doc_of_file[name] = doc.doc_id
            _write_if_changed(docs_dir / name, render_document(doc))
        computed = getattr(embedder, "computed", 0)
        t0 = time.perf_counter()
        summary = Ingestor(eval_settings(settings, index_dir), index_dir, embedder=embedder).run(
            [docs_dir], _IngestReporter(progress)
        )
        seconds = time.perf_counter() - t0
        skipped = [
            {"doc_id": doc_of_file.get(Path(s["path"]).name, s["path"]), "reason": s["reason"]}
            for s in summary.skipped
        ]
        meta = {
            "dataset": ds.name,
            "doc_of_file": doc_of_file,
            "indexing_s": round(seconds, 3),
            "n_chunks": summary.chunks,
            "vectors_computed": getattr(embedder, "computed", 0) - computed,
            "skipped": skipped,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        meta_path.write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
        return PreparedIndex(
            index_dir, doc_of_file, meta["indexing_s"], False, summary.chunks, skipped,
            meta["vectors_computed"],
        )


def eval_index(
    settings: "Settings",
    ds: RetrievalDataset,
    progress: EvalProgress | None = None,
) -> tuple["IndexSnapshot", Callable[[str], str]]:
    """The evaluation index of `ds` (built once, cached) and chunk path -> doc_id.

    The snapshot's `settings` point at the cached index (embedded Chroma), so anything
    built from them (an answerer, a retriever) reads this index, not the user's.
    """
    from pipeline.index.snapshot import IndexSnapshot

    embedder = CachingEmbedder(settings, open_vector_cache(settings))
    prepared = prepare_index(ds, settings, embedder, progress)
    snapshot = IndexSnapshot(
        eval_settings(settings, prepared.index_dir), prepared.index_dir, embedder=embedder
    )
    return snapshot, prepared.doc_id


def _safe_name(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name) or "data"


# --------------------------------------------------------------------------- running questions


def rank_documents(
    index: "IndexSnapshot",
    query: str,
    retriever: str,
    doc_id: Callable[[str], str],
    depth: int = DEPTH,
    fusion: str | None = None,
    reranker: "Reranker | None" = None,
    candidates: int = 20,
) -> list[str]:
    """At least `depth` doc_ids (fewer if the index has fewer), best chunk first; with a `reranker`, the
    first `candidates` chunks in its order."""
    from pipeline.index.rerank import reranked
    from pipeline.index.search import search

    total = len(index.chunks)
    k = min(CHUNK_DEPTH, total)
    while True:
        hits = search(index, query, k=k, retriever=retriever, fusion=fusion)
        docs = dedupe(doc_id(h.chunk.path) for h in hits)
        if len(docs) >= depth or len(hits) < k or k >= total:
            break
        k = min(2 * k, total)
    if reranker is None:
        return docs
    return dedupe(doc_id(h.chunk.path) for h in reranked(reranker, query, hits, len(hits), candidates))


@dataclass
class RetrievalReport:
    dataset: str
    n_docs: int
    n_queries: int
    n_chunks: int
    indexing_s: float  # wall time of the ingest that built the index (see vectors_computed)
    index_cached: bool
    vectors_computed: int  # passage vectors that ingest embedded; the others came from the cache
    skipped_docs: list[dict]
    retrievers: dict[str, dict[str, float]]
    split: str | None = None  # the articles' split the questions come from (None: all questions)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {
            "n_docs": d.pop("n_docs"),
            "n_queries": d.pop("n_queries"),
            "retrievers": d.pop("retrievers"),
            **d,
        }


def evaluate_retrieval(
    data_dir: Path,
    settings: "Settings",
    retrievers: Sequence[str] = ALL_RETRIEVERS,
    limit: int | None = None,
    progress: EvalProgress | None = None,
    fusions: Sequence[str] = (),
    rerank: bool = False,
    split: str | None = None,
) -> RetrievalReport:
    """Index DATA_DIR's corpus (cached) and score each retriever on its questions.

    `fusions` adds hybrid variants, reported as "hybrid:<fusion>" (for comparing fusion rules
    on the same index); the plain "hybrid" uses the default fusion. `rerank` adds
    "hybrid+rerank": the settings' reranker over the first `reranker_candidates` fused chunks.
    `split` ("heldout", "val", "train") keeps the questions of that split's articles only
    (`relevance_data.split_qids`): the reranker trained on these sets' "train" articles, so
    its figures mean something on "heldout" alone (applied before `limit`).
    """
    from pipeline.index.fusion import FUSIONS
    from pipeline.index.search import RETRIEVERS
    from pipeline.index.snapshot import IndexSnapshot

    progress = progress or SilentProgress()
    for r in retrievers:
        if r not in RETRIEVERS:
            raise ValueError(f"unknown retriever {r!r}: choose {', '.join(RETRIEVERS)} or all")
    for f in fusions:
        if f not in FUSIONS:
            raise ValueError(f"unknown fusion {f!r}: choose one of {', '.join(sorted(FUSIONS))}")
    ds = load_retrieval_dataset(Path(data_dir), limit=None if split else limit)
    if split:
        from dataclasses import replace

        from pipeline.evaluation.datasets import spread
        from pipeline.evaluation.relevance_data import split_qids

        keep = split_qids(ds.queries, split)
        ds = replace(ds, queries=tuple(spread([q for q in ds.queries if q.qid in keep], limit)))
    embedder = CachingEmbedder(settings, open_vector_cache(settings))
    prepared = prepare_index(ds, settings, embedder, progress)
    index = IndexSnapshot(
        eval_settings(settings, prepared.index_dir), prepared.index_dir, embedder=embedder
    )
    runs: list[tuple[str, str, str | None]] = [(r, r, None) for r in retrievers]
    runs += [(f"hybrid:{f}", "hybrid", f) for f in fusions]
    results: dict[str, dict[str, float]] = {}
    for label, retriever, fusion in runs:
        results[label] = _run_questions(index, ds, prepared, retriever, fusion, label, progress)
    if rerank:
        from pipeline.index.rerank import load_reranker

        reranker = load_reranker(settings)
        if reranker is None:
            raise ValueError("--rerank needs the setting reranker")
        results["hybrid+rerank"] = _run_questions(index, ds, prepared, "hybrid", None, "hybrid+rerank", progress,
                                                  reranker, settings.reranker_candidates)
    return RetrievalReport(
        dataset=ds.name,
        n_docs=len(ds.corpus),
        n_queries=len(ds.queries),
        n_chunks=prepared.n_chunks,
        indexing_s=prepared.indexing_s,
        index_cached=prepared.cached,
        vectors_computed=prepared.vectors_computed,
        skipped_docs=prepared.skipped,
        retrievers=results,
        split=split,
    )


def _run_questions(index, ds, prepared, retriever, fusion, label, progress, reranker=None,
                   candidates: int = 20) -> dict[str, float]:
    """Mean metrics and latency percentiles of one retriever over the questions.

    Latency is wall time per question, warm (one untimed question first), including the
    query embedding for dense and hybrid even when the vector was reused (`replayed_s`).
    """
    embedder = index.embedder
    # Warm-up, not timed: model weights, BM25 arrays, Chroma segments, MeCab.
    rank_documents(index, WARM_UP_QUESTION, retriever, prepared.doc_id, fusion=fusion, reranker=reranker,
                   candidates=candidates)
    progress.start(label, len(ds.queries))
    scores, latencies = [], []
    for q in ds.queries:
        replayed = getattr(embedder, "replayed_s", 0.0)
        t0 = time.perf_counter()
        docs = rank_documents(index, q.question, retriever, prepared.doc_id, fusion=fusion, reranker=reranker,
                              candidates=candidates)
        elapsed = time.perf_counter() - t0 + getattr(embedder, "replayed_s", 0.0) - replayed
        latencies.append(elapsed * 1000.0)
        scores.append(score_query(docs, q.gold_doc_ids))
        progress.advance()
    out = mean_scores(scores)
    out["latency_ms_p50"] = percentile(latencies, 50)
    out["latency_ms_p95"] = percentile(latencies, 95)
    return {k: round(v, 4) for k, v in out.items()}
