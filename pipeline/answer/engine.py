"""Answering: route, pack, ask the LLM, check every cited sentence.

`Answerer.ask(question)` is what `rag ask` and the notebooks call; `as_query_engine`
exposes it as a llama-index `CustomQueryEngine`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pipeline.answer.packing import (
    in_document_order,
    number_sources,
    pack_documents,
    render_sources,
)
from pipeline.answer.backends.base import Completion
from pipeline.answer.prompts import (
    ANSWER_LABEL,
    ASSISTANT_PREFILL,
    UNKNOWN,
    ParsedOutput,
    build_prompt,
    close_evidence,
    parse_output,
    render_plain,
    says_unknown,
)
from pipeline.answer.router import Route, RouteInputs, decide

if TYPE_CHECKING:
    from pipeline.answer.backends.base import LLMBackend
    from pipeline.answer.checker import CheckedAnswer, CitationChecker
    from pipeline.documents import Source
    from pipeline.index.snapshot import IndexSnapshot
    from pipeline.settings import Settings

ModeChoice = Literal["auto", "retrieve", "long-context"]
Policy = Literal["annotate", "strip", "refuse"]
PROMPT_OVERHEAD_TOKENS = 400  # instructions + format example + question, measured once below
REFUSAL = "資料では裏付けられません"
ANSWER_AFTER_EVIDENCE_TOKENS = 128  # an answer is a sentence or two; the quote already took its share


@dataclass
class Answer:
    question: str
    answer: str  # as shown to the user, after the citation policy
    raw_answer: str  # the model's answer section, before the policy
    evidence: str  # the model's quoted evidence
    mode: str
    route: Route
    sources: list["Source"]
    checked: "CheckedAnswer | None"
    backend: str
    refused: bool = False
    fallback_from: str | None = None
    completion: "Completion | None" = None
    seconds: float = 0.0
    tokens_read: int = 0
    extra: dict = field(default_factory=dict)


def _display(path: str) -> str:
    import os

    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


class Answerer:
    def __init__(
        self,
        settings: "Settings",
        index: "IndexSnapshot",
        backend: "LLMBackend",
        checker: "CitationChecker | None" = None,
    ):
        self.settings = settings
        self.index = index
        self.backend = backend
        self.checker = checker

    @classmethod
    def from_settings(
        cls, settings: "Settings", backend: str | None = None, index: "IndexSnapshot | None" = None
    ) -> "Answerer":
        """An Answerer over the settings' index, with the chosen backend and the citation checker."""
        from pipeline.answer.backends import load_backend
        from pipeline.answer.checker import CitationChecker
        from pipeline.index.snapshot import open_index

        snapshot = index or open_index(settings)
        llm = load_backend(settings, backend)
        judge = None
        if settings.citation_llm_judge and getattr(llm, "prob_yes", None) is not None and llm.info.generative:
            from pipeline.answer.checker import llm_judge

            judge = llm_judge(llm)
        checker = CitationChecker(settings, embedder=snapshot.embedder, judge=judge)
        return cls(settings, snapshot, llm, checker)

    # -- facts for the router ----------------------------------------------------

    def corpus_tokens(self) -> int:
        """Tokens of the whole packed corpus with the backend's tokenizer, cached per generation."""
        key = f"corpus-tokens-{self.backend.info.name}"
        cache = self.index.index_dir / self.index.manifest.snapshot / f"{key}.txt"
        if cache.exists():
            return int(cache.read_text())
        text = self._packed_corpus().text
        n = self.backend.count_tokens(text)
        try:
            cache.write_text(str(n))
        except OSError:
            pass
        return n

    @dataclass
    class _Packed:
        sources: list
        text: str
        tokens: int
        dropped: int

    def _packed_corpus(self, priority: list[str] | None = None, budget: int | None = None) -> "_Packed":
        docs = list(self.index.documents.values())
        budget = budget if budget is not None else 10**12
        packed = pack_documents(
            docs, self.backend.count_tokens if budget < 10**12 else len, budget, priority, _display
        )
        text = render_sources(packed.sources, _display)
        return Answerer._Packed(packed.sources, text, packed.tokens, packed.dropped)

    def _retrieve(self, question: str):
        from pipeline.index.search import search

        k = self.settings.top_k
        hits = search(self.index, question, k=k, retriever=self.settings.retriever)
        dense = search(self.index, question, k=5, retriever="dense")
        sparse = search(self.index, question, k=5, retriever="bm25")
        return hits, _confidence(dense, sparse)

    def _prefix_key(self, text: str) -> str:
        return hashlib.sha256((self.backend.info.name + "\0" + text).encode()).hexdigest()[:24]

    def prefix_state_dir(self) -> Path:
        return self.index.index_dir / "kv-cache"

    def _prefix_cached(self, packed_text: str) -> bool:
        if not self.backend.info.supports_prefix_cache:
            return False
        if not hasattr(self.backend, "prepare_prefix"):
            return True  # servers that cache stable prefixes themselves
        return (self.prefix_state_dir() / f"{self._prefix_key(packed_text)}.bin").exists()

    # -- the pipeline --------------------------------------------------------------

    def route(self, question: str, mode: ModeChoice = "auto"):
        hits, confidence = self._retrieve(question)
        chunks = in_document_order([h.chunk for h in hits])
        info = self.backend.info
        corpus_tokens = self.corpus_tokens()
        retrieve_tokens = sum(self.backend.count_tokens(c.text) + 24 for c in chunks)
        packed_text = self._packed_corpus().text if corpus_tokens else ""
        inputs = RouteInputs(
            question=question,
            corpus_tokens=corpus_tokens,
            retrieve_tokens=retrieve_tokens,
            window=info.context_window,
            prompt_tokens=PROMPT_OVERHEAD_TOKENS,
            answer_tokens=self.settings.answer_tokens,
            prompt_tokens_per_s=info.prompt_tokens_per_s,
            gen_tokens_per_s=info.gen_tokens_per_s,
            price_in_per_mtok=info.price_in_per_mtok,
            price_out_per_mtok=info.price_out_per_mtok,
            prefix_cached=self._prefix_cached(packed_text),
            latency_budget_s=self.settings.latency_budget_s,
            cost_budget=self.settings.cost_budget,
            retrieval_confidence=confidence,
            token_count_estimated=info.token_count_estimated,
        )
        route = decide(inputs)
        if mode != "auto":
            forced = "long-context" if mode == "long-context" else "retrieve"
            if forced == "long-context" and route.mode == "top-documents":
                forced = "top-documents"
            elif forced == "long-context" and corpus_tokens > route.usable_window:
                forced = "top-documents"
            route = Route(
                forced, route.reasons + (f"--mode {mode} が指定されたため {forced}",),
                route.usable_window, route.corpus_tokens, route.estimates, False,
                route.token_count_estimated,
            )
        return route, chunks, hits

    def ask(self, question: str, mode: ModeChoice = "auto", policy: Policy | None = None) -> Answer:
        t0 = time.time()
        policy = policy or self.settings.citation_policy
        route, chunks, hits = self.route(question, mode)
        answer = self._answer_in_mode(question, route, chunks, hits, policy)
        if route.allow_fallback and says_unknown(answer.raw_answer):
            lc = route.estimates.get("long-context")
            if lc and lc.seconds <= self.settings.latency_budget_s and route.corpus_tokens <= route.usable_window:
                fallback_route = Route(
                    "long-context",
                    route.reasons + ("検索モードの回答が「分かりません」だったため長文脈で再試行 (Self-Route)",),
                    route.usable_window, route.corpus_tokens, route.estimates, False,
                    route.token_count_estimated,
                )
                retry = self._answer_in_mode(question, fallback_route, chunks, hits, policy)
                retry.fallback_from = "retrieve"
                retry.tokens_read += answer.tokens_read
                answer = retry
        answer.seconds = round(time.time() - t0, 2)
        return answer

    def _answer_in_mode(self, question, route: Route, chunks, hits, policy) -> Answer:
        if route.mode == "retrieve":
            sources = number_sources(chunks)
            context = render_sources(sources, _display)
            cache_key = None
        elif route.mode == "long-context":
            packed = self._packed_corpus()
            sources, context = packed.sources, packed.text
            cache_key = self._ensure_prefix(context) if self.backend.info.supports_prefix_cache else None
        else:  # top-documents: best-matching whole documents up to the window
            priority = list(dict.fromkeys(h.chunk.path for h in hits))
            more = self.index.sparse(question, 50) + self.index.dense(question, 50)
            priority += [s.chunk.path for s in more if s.chunk.path not in priority]
            packed = self._packed_corpus(priority, route.usable_window)
            sources, context = packed.sources, packed.text
            cache_key = None
            best = priority[0] if priority else None
            if best is not None and best not in {s.chunk.path for s in packed.sources}:
                # The best-matching document alone is larger than the window: whole documents
                # would come from worse matches (jsquad articles, 4k window: gold article packed 2/10).
                reason = f"最も関連する文書 {_display(best)} が窓に収まらないため、検索した断片で回答"
                route = replace(route, mode="retrieve", reasons=route.reasons + (reason,))
                sources = number_sources(chunks)
                context = render_sources(sources, _display)

        if not self.backend.info.generative:
            return self._extractive(question, route, sources, policy)

        prompt = build_prompt(context, question)
        raw_prompt = self._raw_prompt(prompt)
        stop = ["<|im_end|>", "\n質問:"]
        completion = self.backend.complete(
            raw_prompt, max_tokens=self.settings.answer_tokens, stop=stop, prefix_cache_key=cache_key,
        )
        parsed = parse_output(completion.text)
        label_added = not parsed.labelled and not says_unknown(parsed.answer)
        if label_added:
            completion, parsed = self._ask_for_the_answer(raw_prompt, completion, stop, cache_key)
        answer = self._finish(question, route, sources, parsed.answer, parsed.evidence, policy, completion)
        answer.extra["answer_label_added"] = label_added
        return answer

    def _ask_for_the_answer(self, raw_prompt, first, stop, cache_key):
        """The model quoted (or wrote) without reaching 「回答:」: write the label for it and let it answer.

        On the jsquad articles the embedded 1.5B model did this for about one question in five,
        mostly by quoting a whole paragraph until the token budget ran out. The prompt and the
        model's own text are a prefix of the new prompt, so a llama.cpp backend reads only the label.
        """
        evidence = close_evidence(first.text)
        second = self.backend.complete(
            raw_prompt + evidence + ANSWER_LABEL, max_tokens=ANSWER_AFTER_EVIDENCE_TOKENS,
            stop=stop + ["\n根拠"], prefix_cache_key=cache_key,
        )
        both = Completion(
            text=evidence + ANSWER_LABEL + second.text,
            prompt_tokens=first.prompt_tokens + second.prompt_tokens,
            completion_tokens=first.completion_tokens + second.completion_tokens,
            seconds=first.seconds + second.seconds,
            prompt_seconds=first.prompt_seconds,
            cached_prompt_tokens=first.cached_prompt_tokens + second.cached_prompt_tokens,
            backend=first.backend,
        )
        quoted = parse_output(evidence)
        return both, ParsedOutput(evidence=quoted.answer, answer=second.text.strip())

    def _raw_prompt(self, prompt) -> str:
        fmt = getattr(self.backend, "format_chat", None)
        if fmt is None:
            return render_plain(prompt)
        return fmt(prompt.system, prompt.user()) + ASSISTANT_PREFILL

    def prefix_text(self, context: str) -> str:
        """The stable part of the raw prompt: everything before the question."""
        raw = self._raw_prompt(build_prompt(context, "\x00"))
        return raw[: raw.index(build_prompt(context, "\x00").user())]

    def _ensure_prefix(self, context: str) -> str | None:
        prepare = getattr(self.backend, "prepare_prefix", None)
        key = self._prefix_key(context)
        if prepare is None:
            return key
        prepare(self.prefix_text(context), key, self.prefix_state_dir())
        return key

    def _extractive(self, question, route, sources, policy) -> Answer:
        from pipeline.answer.backends.extractive import extractive_answer
        from pipeline.japanese import default_analyzer

        from pipeline.answer.backends.extractive import EXTRACTIVE_LABEL

        text = extractive_answer(question, [(s.number, s.chunk.text) for s in sources], default_analyzer())
        # The label says how the answer was made; it is not a claim to check.
        body = text.removeprefix(EXTRACTIVE_LABEL).strip()
        answer = self._finish(question, route, sources, body, "", policy, None)
        answer.extra["label"] = EXTRACTIVE_LABEL
        answer.answer = f"{EXTRACTIVE_LABEL}\n{answer.answer}"
        return answer

    def _finish(self, question, route, sources, answer_text, evidence, policy, completion) -> Answer:
        from pipeline.answer.checker import apply_policy

        checked = None
        shown, refused = answer_text, False
        if self.checker is not None and answer_text and not says_unknown(answer_text):
            checked = self.checker.check(answer_text, sources)
            shown, refused = apply_policy(checked, answer_text, policy, self.settings.refuse_below)
        tokens_read = completion.prompt_tokens - completion.cached_prompt_tokens if completion else 0
        return Answer(
            question=question, answer=shown, raw_answer=answer_text, evidence=evidence,
            mode=route.mode, route=route, sources=sources, checked=checked,
            backend=self.backend.info.name, refused=refused, completion=completion,
            tokens_read=tokens_read,
        )


def _confidence(dense, sparse) -> float:
    """Agreement of the two retrievers: top-1 document match and overlap of their top-5."""
    if not dense or not sparse:
        return 0.0
    d = [h.chunk.path for h in dense]
    s = [h.chunk.path for h in sparse]
    top1 = 1.0 if d[0] == s[0] else 0.0
    overlap = len(set(d) & set(s)) / len(set(d) | set(s))
    return round(0.5 * top1 + 0.5 * overlap, 3)


def answer_to_dict(a: Answer) -> dict:
    """The JSON shape of `rag ask --json`."""
    verdicts = {}
    if a.checked is not None:
        for v in a.checked.verdicts:
            verdicts[(v.sentence.start, v.sentence.end)] = v
    sentences = []
    if a.checked is not None:
        for v in a.checked.verdicts:
            sentences.append(
                {
                    "text": v.sentence.text,
                    "citations": list(v.sentence.citations),
                    "verdict": v.label,
                    "score": round(v.score, 4),
                    "fixed_citations": list(v.fixed_citations),
                    "reasons": list(v.reasons),
                }
            )
    else:
        from pipeline.answer.citations import parse_answer

        for s in parse_answer(a.raw_answer):
            sentences.append({"text": s.text, "citations": list(s.citations), "verdict": None})
    cited = {n for s in sentences for n in [*s["citations"], *s.get("fixed_citations", [])]}
    return {
        "question": a.question,
        "answer": a.answer,
        "raw_answer": a.raw_answer,
        "evidence": a.evidence,
        "mode": a.mode,
        "fallback_from": a.fallback_from,
        "backend": a.backend,
        "refused": a.refused,
        "route": a.route.to_dict(),
        "sentences": sentences,
        "citation_recall": a.checked.citation_recall if a.checked else None,
        "citation_precision": a.checked.citation_precision if a.checked else None,
        "sources": [
            {
                "number": s.number,
                "path": _display(s.chunk.path),
                "lines": [s.chunk.line_start, s.chunk.line_end],
                "start": s.chunk.start,
                "end": s.chunk.end,
                "cited": s.number in cited,
                "text": s.chunk.text,
            }
            for s in a.sources
        ],
        "seconds": a.seconds,
        "tokens_read": a.tokens_read,
        "label": a.extra.get("label"),
        # True when the model quoted without answering and was given 「回答:」 to go on from.
        "answer_label_added": a.extra.get("answer_label_added", False),
    }


def as_query_engine(answerer: Answerer):
    """The answerer as a llama-index `CustomQueryEngine`."""
    from llama_index.core.query_engine import CustomQueryEngine
    from llama_index.core.response import Response

    class RagQueryEngine(CustomQueryEngine):
        def custom_query(self, query_str: str):
            a = answerer.ask(query_str)
            return Response(response=a.answer, metadata=answer_to_dict(a))

    return RagQueryEngine()
