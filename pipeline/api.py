"""The Python API: what the `rag` CLI does, in one or two calls (notebooks use this).

    from pipeline import api
    api.ingest(["corpora/demo"], index="indexes/demo")
    api.search("Ollamaの既定のポートは？", index="indexes/demo")
    answer = api.ask("Ollamaの既定のポートは？", index="indexes/demo")
    engine = api.as_query_engine(index="indexes/demo")   # a llama-index query engine
    api.prepare_long_context(index="indexes/demo")        # what `rag ingest` does after indexing
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

from pipeline.settings import Settings, load_settings

if TYPE_CHECKING:
    from pipeline.answer.backends.base import LLMBackend
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
           settings: Settings | None = None, rerank: bool = False) -> list["ScoredChunk"]:
    """The best `k` chunks; `rerank=True` re-orders the first `reranker_candidates` with the reranker."""
    from pipeline.index.search import search as _search

    snapshot = open_index(index, settings)
    if not rerank:
        return _search(snapshot, question, k=k, retriever=retriever)
    from pipeline.index.rerank import load_reranker, search_reranked

    reranker = load_reranker(snapshot.settings)
    if reranker is None:
        return _search(snapshot, question, k=k, retriever=retriever)
    return search_reranked(snapshot, question, k, reranker, snapshot.settings.reranker_candidates, retriever)


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


PREPARE_LOCK = ".lock"  # in the state folder: one preparation at a time


@dataclass(frozen=True)
class PrefixReport:
    """What `prepare_long_context` did. status: prepared (the corpus was read and its state
    saved), ready (the state for this corpus was already saved), skipped (`message` says why),
    failed (set by the caller that caught the error, as `rag ingest` does)."""

    status: Literal["prepared", "ready", "skipped", "failed"]
    message: str  # one line, for the user
    key: str | None = None  # the state's name in `index/kv-cache/`
    corpus_tokens: int | None = None
    usable_window: int | None = None
    state_bytes: int | None = None
    pruned: int = 0  # states of other corpus versions deleted
    speed: dict | None = None  # prompt / generation tokens per second, when measured by this call
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The JSON shape of `rag ingest --json`'s "prefix"."""
        return asdict(self)


def prepare_long_context(
    index: str | Path | None = None, settings: Settings | None = None,
    backend: "str | LLMBackend | None" = None, log: Callable[[str], None] | None = None,
) -> PrefixReport:
    """Read the whole corpus once and save its prefix state, so that `rag ask` can answer from
    the whole corpus at the cost of the question's tokens (what `rag ingest` does after indexing).

    Only where the backend keeps prefix states on disk (the embedded one) and the corpus, with
    the prompt around it and the answer, fits the window. The state of an unchanged corpus is
    found by name without loading the model (the window was checked when it was saved; the
    router checks it again for each question); states of other corpus versions are deleted
    (one state on disk: ≈ 28 KiB per token). Measures the backend's speed once, while its model is
    loaded. Skipped while another process prepares. `log` hears of the long read before it
    starts. Errors (a missing model: ModelUnavailable) are raised.
    """
    from filelock import FileLock, Timeout

    from pipeline.answer.backends import load_backend
    from pipeline.answer.engine import Answerer
    from pipeline.tokens import QUESTION_TOKENS, usable_window

    started = time.perf_counter()
    settings = settings or settings_for(index)
    llm = load_backend(settings, backend) if backend is None or isinstance(backend, str) else backend
    info = llm.info

    def report(status, message, **fields) -> PrefixReport:
        return PrefixReport(status, message, seconds=round(time.perf_counter() - started, 2), **fields)

    if not info.generative:
        return report("skipped", f"バックエンド {info.name} は LLM を使わないため、長文脈の準備はしません")
    if not info.supports_prefix_cache or not hasattr(llm, "prepare_prefix"):
        why = "サーバーが共通の前半部分を自分でキャッシュする" if info.supports_prefix_cache else "前半部分の状態を保存できない"
        return report("skipped", f"バックエンド {info.name} は{why}ため、事前の準備はしません")
    answerer = Answerer(settings, open_index(settings=settings), llm)  # no checker: nothing is answered
    state_dir = answerer.prefix_state_dir()
    # Its own lock, not the index's: reading a large corpus takes minutes, and ingests go on
    # meanwhile (the next one prepares their corpus).
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state_dir / PREPARE_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return report("skipped", "別の取り込みが長文脈を準備中のため、今回は準備しません (次の取り込みで準備します)")
    try:
        if not answerer.index.documents:
            return report("skipped", "コーパスが空のため、長文脈の準備はしません", pruned=_prune(state_dir, set()))
        key = answerer.corpus_prefix_key()
        if answerer.prefix_ready(key):  # an unchanged corpus: no model, no tokenizer
            return report("ready", "長文脈は準備済みです (このコーパスの状態が保存されています)", key=key,
                          state_bytes=_size(state_dir / f"{key}.bin"), pruned=_prune(state_dir, {key}))
        corpus = answerer.corpus_tokens()  # counted once per index generation
        usable, window = info.context_window, "窓"  # a corpus larger than the window: no need to count the prompt
        if corpus <= usable:
            prompt = answerer.prompt_tokens("") + QUESTION_TOKENS  # the question is not known: an allowance
            usable, window = usable_window(usable, prompt_tokens=prompt, answer_tokens=settings.answer_tokens), "使える窓"
        if corpus > usable:
            return report(
                "skipped", f"コーパスが窓に入らないため、長文脈の準備はしません: {corpus} トークン > {window} {usable} トークン",
                corpus_tokens=corpus, usable_window=usable, pruned=_prune(state_dir, set()),
            )
        pruned = _prune(state_dir, set())  # before the new one is written: one state on disk at a time
        if log is not None:
            # Long reads run slower than the speed measured on 512 tokens (44 vs 78 tok/s on the demo).
            minutes = corpus / max(info.prompt_tokens_per_s, 1.0) / 60
            log(f"長文脈の準備: コーパス {corpus} トークンを読み、状態を保存します"
                f" (目安 {max(1, round(minutes))} 分以上。--no-prefix で省略できます)")
        answerer.prepare_prefix()
        speed = None
        if not info.speed_measured and hasattr(llm, "measure_speed"):
            speed = llm.measure_speed()  # once per model and thread count (cached), the model being loaded
        size = _size(state_dir / f"{key}.bin")
        mb = f"、状態 {size / 1e6:.0f} MB" if size else ""
        return report(
            "prepared", f"長文脈を準備しました: コーパス {corpus} トークン{mb}",
            key=key, corpus_tokens=corpus, usable_window=usable, state_bytes=size, pruned=pruned, speed=speed,
        )
    finally:
        lock.release()


def _prune(state_dir: Path, keep: set[str]) -> int:
    from pipeline.answer.backends.llama_cpp import prune_prefix_states

    return prune_prefix_states(state_dir, keep) if state_dir.is_dir() else 0


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def status(index: str | Path | None = None, settings: Settings | None = None) -> dict:
    from pipeline.ingest.status import index_status

    return index_status(settings or settings_for(index))
