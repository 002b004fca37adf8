"""The Python API: what the `rag` CLI does, in one or two calls (notebooks use this).

    from pipeline import api
    api.ingest(["corpora/demo"], index="indexes/demo")
    api.search("Ollamaの既定のポートは？", index="indexes/demo")
    answer = api.ask("Ollamaの既定のポートは？", index="indexes/demo")
    engine = api.as_query_engine(index="indexes/demo")   # a llama-index query engine
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pipeline.settings import Settings, load_settings

if TYPE_CHECKING:
    from pipeline.answer.engine import Answer, Answerer
    from pipeline.answer.query_engine import RagQueryEngine
    from pipeline.documents import ScoredChunk
    from pipeline.index.snapshot import IndexSnapshot
    from pipeline.ingest.sync import IngestSummary


def settings_for(index: str | Path | None = None, **overrides) -> Settings:
    return load_settings(index_dir=str(index) if index else None, **overrides)


def ingest(paths: Sequence[str | Path], index: str | Path | None = None, settings: Settings | None = None,
           wait: float = 0.0, rebuild: bool = False) -> "IngestSummary":
    """Bring the index in step with `paths`; rebuild: index every note again (vectors Chroma
    still holds for the same chunks are kept). A damaged index is rebuilt without asking."""
    from pipeline.ingest.sync import Ingestor

    settings = settings or settings_for(index)
    return Ingestor(settings, Path(settings.index_dir)).run([Path(p) for p in paths], wait=wait, rebuild=rebuild)


def open_index(index: str | Path | None = None, settings: Settings | None = None) -> "IndexSnapshot":
    from pipeline.index.snapshot import open_index as _open

    settings = settings or settings_for(index)
    return _open(settings)


def search(question: str, k: int = 5, retriever: str = "hybrid", index: str | Path | None = None,
           settings: Settings | None = None) -> list["ScoredChunk"]:
    from pipeline.index.search import search as _search

    return _search(open_index(index, settings), question, k=k, retriever=retriever)


def answerer_for(settings: Settings, backend: str | None = None, index_snapshot=None) -> "Answerer":
    """An Answerer over the settings' index, with the chosen backend and the citation checker."""
    from pipeline.answer.engine import Answerer

    return Answerer.from_settings(settings, backend, index_snapshot or open_index(settings=settings))


def ask(question: str, mode: str = "auto", backend: str | None = None, policy: str | None = None,
        index: str | Path | None = None, settings: Settings | None = None) -> "Answer":
    settings = settings or settings_for(index)
    return answerer_for(settings, backend).ask(question, mode=mode, policy=policy)


def as_query_engine(index: str | Path | None = None, backend: str | None = None, mode: str = "auto",
                    policy: str | None = None, settings: Settings | None = None) -> "RagQueryEngine":
    """`ask` as a llama-index query engine: `.query(q)` gives a `Response` whose metadata
    holds the route and the checker's verdicts (`pipeline.answer.query_engine`)."""
    from pipeline.answer.query_engine import RagQueryEngine

    settings = settings or settings_for(index)
    return RagQueryEngine(answerer_for(settings, backend), mode=mode, policy=policy)


def status(index: str | Path | None = None, settings: Settings | None = None) -> dict:
    from pipeline.ingest.status import index_status

    return index_status(settings or settings_for(index))
