"""Answering: route, pack, ask the LLM, check every cited sentence.

`Answerer.ask(question)` is what `rag ask` and the notebooks call;
`pipeline.answer.query_engine.RagQueryEngine` (`api.as_query_engine`) exposes it as a
llama-index query engine. A question is retrieved for once (one
embedding, one BM25 tokenization), and its `Answer` is built once, from the checked
answer as the user will read it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pipeline.answer.packing import (
    in_document_order,
    number_sources,
    pack_documents,
    render_sources,
    whole_corpus,
)
from pipeline.answer.backends.base import Completion
from pipeline.answer.prompts import (
    ANSWER_LABEL,
    ASSISTANT_PREFILL,
    SHORT_PREFILL,
    SHORT_STOP,
    UNKNOWN,
    ParsedOutput,
    build_prompt,
    build_short_prompt,
    close_evidence,
    parse_output,
    render_plain,
    says_unknown,
)
from pipeline.answer.router import Route, RouteInputs, decide
from pipeline.check.citations import claim_text, parse_answer
from pipeline.documents import display_path

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pipeline.answer.answerability import Answerability
    from pipeline.answer.backends.base import LLMBackend
    from pipeline.check import CheckedAnswer, CitationChecker
    from pipeline.check.verdicts import Verdict
    from pipeline.check.policy import Policy
    from pipeline.documents import Source
    from pipeline.index.rerank import Reranker
    from pipeline.index.search import Retrieval
    from pipeline.index.snapshot import IndexSnapshot
    from pipeline.settings import Settings

ModeChoice = Literal["auto", "retrieve", "long-context"]
ANSWER_AFTER_EVIDENCE_TOKENS = 128  # an answer is a sentence or two; the quote already took its share
# The retrievers' agreement (the router's retrieval confidence) is judged on their top 5,
# the default `top_k`: deeper lists of a small corpus overlap whatever the question.
AGREEMENT_DEPTH = 5
# A prefix state is named by this many hex digits of sha256 (96 bits): a handful of
# states live side by side, so a collision is out of reach and the names stay short.
PREFIX_KEY_HEX_DIGITS = 24
# Where generation stops: the end of the assistant's ChatML turn, or a model that goes on
# to write the next 「質問:」 itself (seen with plain prompts).
STOP = ("<|im_end|>", "\n質問:")
# ...and, once 「回答:」 was written for it, the start of another 「根拠」 block.
STOP_AFTER_LABEL = STOP + ("\n根拠",)

# The keys of one sentence in `rag ask --json` (a Verdict carries more: offsets, spans).
SENTENCE_KEYS = ("text", "citations", "verdict", "score", "fixed_citations", "reasons")


@dataclass(frozen=True)
class Answer:
    """One answered question: what the user reads, and what it was made from."""

    question: str
    answer: str  # as shown to the user, after the citation policy (and the label, if any)
    raw_answer: str  # the model's answer section, before the policy
    evidence: str  # the model's quoted evidence
    mode: str
    route: Route
    sources: tuple["Source", ...]
    checked: "CheckedAnswer | None"  # the checker's verdicts on `raw_answer`
    backend: str
    refused: bool = False
    fallback_from: str | None = None  # "retrieve" when Self-Route retried with long context
    completion: "Completion | None" = None
    seconds: float = 0.0
    tokens_read: int = 0  # prompt tokens read fresh (not from a cache), every attempt
    label: str | None = None  # how the answer was made when not by the LLM (extractive)
    answer_label_added: bool = False  # the model quoted without answering and was given 「回答:」
    # ALCE citation recall / precision of `answer` as shown (see `figures_as_shown`).
    citation_recall: float | None = None
    citation_precision: float | None = None
    checker: dict | None = None  # what checked the citations (`CitationChecker.describe`): mode, threshold, fallback
    replaced_answer: str | None = None  # the model's answer the checker could not confirm (extractive fallback)
    short_answer: str | None = None  # a one-sentence answer without what it repeats of the question (`answer_phrase`)
    reranker: str | None = None  # what re-ordered the retrieved candidates (the `reranker` setting), None: none

    def to_dict(self) -> dict:
        """The JSON shape of `rag ask --json`."""
        if self.checked is not None:
            sentences = [
                {k: d[k] for k in SENTENCE_KEYS} for d in (v.to_dict() for v in self.checked.verdicts)
            ]
        else:
            sentences = [
                {"text": s.text, "citations": list(s.citations), "verdict": None}
                for s in parse_answer(self.raw_answer)
            ]
        cited = {n for s in sentences for n in [*s["citations"], *s.get("fixed_citations", [])]}
        return {
            "question": self.question,
            "answer": self.answer,
            "raw_answer": self.raw_answer,
            "evidence": self.evidence,
            "mode": self.mode,
            "fallback_from": self.fallback_from,
            "backend": self.backend,
            "refused": self.refused,
            "route": self.route.to_dict(),
            "sentences": sentences,
            "citation_recall": self.citation_recall,
            "citation_precision": self.citation_precision,
            "sources": [s.to_dict(cited=s.number in cited) for s in self.sources],
            "seconds": self.seconds,
            "tokens_read": self.tokens_read,
            "label": self.label,
            "answer_label_added": self.answer_label_added,
            "checker": self.checker,
            "replaced_answer": self.replaced_answer,
            "short_answer": self.short_answer,
            "reranker": self.reranker,
            "first_token_seconds": self.first_token_seconds,
        }

    @property
    def first_token_seconds(self) -> float | None:
        """Reading the prompt: the wait before the first generated token (None without an LLM call)."""
        c = self.completion
        return round(c.prompt_seconds, 2) if c is not None and c.prompt_seconds is not None else None


def answer_to_dict(a: Answer) -> dict:
    """`a.to_dict()`, under the name notebooks and older callers use."""
    return a.to_dict()


@dataclass(frozen=True)
class _Draft:
    """One attempt's answer before checking: what the model (or the extractor) wrote."""

    route: Route
    sources: tuple["Source", ...]
    text: str  # the answer section
    evidence: str
    completion: Completion | None = None
    label: str | None = None
    answer_label_added: bool = False
    short: bool = False  # a short answer over selected evidence (answer_style = "short")
    replaced: str | None = None  # the model's answer, when the extractive fallback took its place
    gate: "Answerability | None" = None  # can the evidence answer the question (short style)

    @property
    def tokens_read(self) -> int:
        c = self.completion
        return c.prompt_tokens - c.cached_prompt_tokens if c is not None else 0


class Answerer:
    def __init__(
        self,
        settings: "Settings",
        index: "IndexSnapshot",
        backend: "LLMBackend",
        checker: "CitationChecker | None" = None,
        reranker: "Reranker | None" = None,
    ):
        self.settings = settings
        self.index = index
        self.backend = backend
        self.checker = checker
        self.reranker = reranker  # re-orders the fused candidates (settings.rerank)

    @classmethod
    def from_settings(
        cls, settings: "Settings", backend: str | None = None, index: "IndexSnapshot | None" = None
    ) -> "Answerer":
        """An Answerer over the settings' index, with the chosen backend and the citation checker."""
        from pipeline.answer.backends import load_backend
        from pipeline.check import CitationChecker
        from pipeline.index.snapshot import open_index

        snapshot = index or open_index(settings)
        llm = load_backend(settings, backend)
        judge = None
        if settings.citation_llm_judge and getattr(llm, "prob_yes", None) is not None and llm.info.generative:
            from pipeline.answer.judge import llm_judge

            judge = llm_judge(llm)
        # settings.citation_model: the entailment model (loaded here, once per Answerer) or, when its
        # artifact is missing, the index's embedder (loaded only then).
        checker = CitationChecker.from_settings(settings, embedder=lambda: snapshot.embedder, judge=judge)
        return cls(settings, snapshot, llm, checker, answer_reranker(settings))

    # -- facts for the router ----------------------------------------------------

    def corpus_tokens(self) -> int:
        """Tokens of the whole packed corpus with the backend's tokenizer, cached per generation."""
        from pipeline.index.manifest import write_atomic

        key = f"corpus-tokens-{self.backend.info.name}"
        cache = self.index.index_dir / self.index.manifest.snapshot / f"{key}.txt"
        try:
            return int(cache.read_text())
        except (OSError, ValueError):  # not counted yet, or a damaged cache: count again
            pass
        n = self.backend.count_tokens(self._corpus_text())
        try:
            write_atomic(cache, str(n))
        except OSError:
            pass
        return n

    def prompt_tokens(self, question: str) -> int:
        """Tokens of the prompt around the sources for `question`, measured on the prompt itself.

        The prompt with an empty context, counted with the backend's tokenizer: the rules,
        the format example, the chat template, the prefill and the question.
        """
        return self.backend.count_tokens(self._raw_prompt(build_prompt("", question)))

    def _corpus_sources(self) -> list["Source"]:
        return whole_corpus(self.index.documents.values())

    def _corpus_text(self) -> str:
        return render_sources(self._corpus_sources(), display_path)

    def _retrieve(self, question: str) -> "Retrieval":
        from pipeline.index.rerank import reranked
        from pipeline.index.search import retrieve

        s, k = self.settings, self.settings.top_k
        if self.reranker is None:
            return retrieve(self.index, question, k=k, retriever=s.retriever)
        pool = retrieve(self.index, question, k=max(k, s.reranker_candidates), retriever=s.retriever)
        return replace(pool, hits=reranked(self.reranker, question, pool.hits, k, s.reranker_candidates))

    def _prefix_key(self, text: str) -> str:
        digest = hashlib.sha256((self.backend.info.name + "\0" + text).encode()).hexdigest()
        return digest[:PREFIX_KEY_HEX_DIGITS]

    def prefix_state_dir(self) -> Path:
        return self.index.index_dir / "kv-cache"

    def _prefix_cached(self, packed_text: str) -> bool:
        if not self.backend.info.supports_prefix_cache:
            return False
        if not hasattr(self.backend, "prepare_prefix"):
            return True  # servers that cache stable prefixes themselves
        return self.prefix_ready(self._context_key(packed_text))

    def _context_key(self, context: str) -> str:
        """The key of the prefix state for `context`: a hash of the prompt's stable part as the
        model reads it (rules, chat template, packed sources), so that a changed note, or changed
        rules, name a new state and the old one is never taken for it."""
        return self._prefix_key(self.prefix_text(context))

    def corpus_prefix_key(self) -> str:
        """The key of the whole packed corpus's prefix state (needs no model)."""
        return self._context_key(self._corpus_text())

    def prefix_ready(self, key: str) -> bool:
        """A prefix state named `key` is saved, for this backend's model where it can tell (loads nothing)."""
        ready = getattr(self.backend, "has_prefix_state", None)
        if ready is not None:
            return bool(ready(key, self.prefix_state_dir()))
        return (self.prefix_state_dir() / f"{key}.bin").exists()

    def prepare_prefix(self) -> str | None:
        """Read the whole packed corpus once and save its state; return its key.

        What `rag ingest` does after indexing (`api.prepare_long_context`), so that a
        long-context answer reads only its question. Backends without on-disk states: only the key.
        """
        return self._ensure_prefix(self._corpus_text())

    # -- the pipeline --------------------------------------------------------------

    def answers_short(self) -> bool:
        """Retrieve mode reads selected evidence and writes a short answer (settings.answer_style)."""
        return self.backend.info.generative and self.settings.answer_style == "short"

    def retrieve_sources(self, question: str, retrieval: "Retrieval") -> list["Source"]:
        """What retrieve mode shows the model: the evidence sentences (short style) or whole chunks."""
        if self.answers_short():
            return self._evidence(question, number_sources([h.chunk for h in retrieval.hits]))
        return number_sources(in_document_order([h.chunk for h in retrieval.hits]))

    def _evidence(self, question: str, ranked: list["Source"]) -> list["Source"]:
        """The question's best sentences of `ranked` (best first), as numbered excerpts."""
        from pipeline.answer.evidence import select_evidence
        from pipeline.japanese import default_analyzer

        return select_evidence(
            question, [s.chunk for s in ranked], default_analyzer(), self.backend.count_tokens,
            budget_tokens=self.settings.evidence_tokens,
        )

    def _short_budget(self, question: str, retrieval: "Retrieval") -> dict:
        """Retrieve mode's prompt and answer tokens for the router, when it answers short
        (and the retrieved chunks' size, which says whether the corpus is hardly larger)."""
        if not self.answers_short():
            return {}
        chunks = number_sources(in_document_order([h.chunk for h in retrieval.hits]))
        prompt = build_short_prompt("", question)
        # The instructions' KV state is kept (`_instructions_state`): a question reads its own part.
        fresh = prompt.user() if self.backend.info.supports_prefix_cache else prompt.system + prompt.user()
        return {
            "retrieve_prompt_tokens": self.backend.count_tokens(fresh),
            "retrieve_answer_tokens": self.settings.short_answer_tokens,
            "retrieved_chunk_tokens": self.backend.count_tokens(render_sources(chunks, display_path)),
            "retrieve_first": True,
        }

    def route(self, question: str, mode: ModeChoice = "auto") -> tuple[Route, list["Source"], "Retrieval"]:
        """The route for `question`, retrieve mode's numbered sources, and the retrieval."""
        retrieval = self._retrieve(question)
        sources = self.retrieve_sources(question, retrieval)
        info = self.backend.info
        corpus_tokens = self.corpus_tokens()
        packed_text = self._corpus_text() if corpus_tokens else ""
        inputs = RouteInputs(
            question=question,
            corpus_tokens=corpus_tokens,
            # exactly the context retrieve mode would send, fences and all
            retrieve_tokens=self.backend.count_tokens(render_sources(sources, display_path)),
            window=info.context_window,
            prompt_tokens=self.prompt_tokens(question),
            answer_tokens=self.settings.answer_tokens,
            prompt_tokens_per_s=info.prompt_tokens_per_s,
            gen_tokens_per_s=info.gen_tokens_per_s,
            price_in_per_mtok=info.price_in_per_mtok,
            price_out_per_mtok=info.price_out_per_mtok,
            prefix_cached=self._prefix_cached(packed_text),
            question_tokens=self.backend.count_tokens(build_prompt("", question).user()),
            **self._short_budget(question, retrieval),
            prefix_preparable=info.supports_prefix_cache and hasattr(self.backend, "prepare_prefix"),
            latency_budget_s=self.settings.latency_budget_s,
            cost_budget=self.settings.cost_budget,
            retrieval_confidence=_confidence(retrieval),
            token_count_estimated=info.token_count_estimated,
        )
        route = decide(inputs)
        if mode != "auto":
            forced = "long-context" if mode == "long-context" else "retrieve"
            if forced == "long-context" and (route.mode == "top-documents" or corpus_tokens > route.usable_window):
                forced = "top-documents"
            route = replace(
                route, mode=forced, reasons=route.reasons + (f"--mode {mode} が指定されたため {forced}",),
                allow_fallback=False,
            )
        return route, sources, retrieval

    def ask(self, question: str, mode: ModeChoice = "auto", policy: Policy | None = None) -> Answer:
        from pipeline.index.search import check_query

        check_query(question)  # empty or over-long: InvalidInput, before any model runs
        started = time.perf_counter()
        policy = policy or self.settings.citation_policy
        route, retrieved, retrieval = self.route(question, mode)
        draft = self._draft(question, route, retrieved, retrieval)
        tokens_read, fallback_from = draft.tokens_read, None
        if route.allow_fallback and says_unknown(draft.text) and self._corpus_may_answer(question, draft):
            lc = route.estimates.get("long-context")
            if lc and lc.seconds <= self.settings.latency_budget_s and route.corpus_tokens <= route.usable_window:
                fallback_route = replace(
                    draft.route, mode="long-context", allow_fallback=False,
                    reasons=draft.route.reasons + ("検索モードの回答が「分かりません」だったため長文脈で再試行 (Self-Route)",),
                )
                draft = self._draft(question, fallback_route, retrieved, retrieval)
                tokens_read += draft.tokens_read
                fallback_from = "retrieve"
        return self._finish(question, draft, policy, fallback_from, tokens_read, started)

    def _corpus_may_answer(self, question: str, draft: _Draft) -> bool:
        """After the answerability gate refused the evidence: does the whole corpus mention the question?

        Self-Route retries with long context when retrieval missed the answer; when no note
        mentions what the question asks about, reading them all would only invite a guess.
        """
        if draft.gate is None or draft.gate.answerable:
            return True
        return self._answerability(question, self._corpus_sources()).answerable

    def _draft(self, question: str, route: Route, retrieved: list["Source"], retrieval: "Retrieval") -> _Draft:
        cache_key = None
        if route.mode == "retrieve":
            sources = retrieved
        elif route.mode == "long-context":
            sources = self._corpus_sources()
            if self.backend.info.supports_prefix_cache:
                cache_key = self._ensure_prefix(render_sources(sources, display_path))
        else:  # top-documents: best-matching whole documents up to the window
            # The retrieved chunks' documents first, then the rest of each retriever's list.
            ranked = (*retrieval.hits, *retrieval.sparse, *retrieval.dense)
            priority = list(dict.fromkeys(h.chunk.path for h in ranked))
            packed = pack_documents(
                list(self.index.documents.values()), self.backend.count_tokens, route.usable_window,
                priority, display_path,
            )
            sources = packed.sources
            best = priority[0] if priority else None
            if best is not None and best not in {s.chunk.path for s in sources}:
                # The best-matching document alone is larger than the window: whole documents
                # would come from worse matches (jsquad articles, 4k window: gold article packed 2/10).
                reason = f"最も関連する文書 {display_path(best)} が窓に収まらないため、検索した断片で回答"
                route = replace(route, mode="retrieve", reasons=route.reasons + (reason,))
                sources = retrieved

        if not self.backend.info.generative:
            # The gate reads what it was calibrated on: the question's best sentences, not whole chunks.
            gate = self._answerability(question, self._evidence(question, sources))
            if not gate.answerable:  # a sentence sharing a word or two is not an answer
                return self._refusal(route, sources, gate)
            return self._extractive(question, route, sources)
        if route.mode == "retrieve" and self.answers_short():
            return self._short_draft(question, route, sources)
        if route.mode != "retrieve" and self.answers_short():
            gate = self._answerability(question, sources)
            if not gate.answerable:  # no note mentions what the question asks about
                return self._refusal(route, sources, gate)

        raw_prompt = self._raw_prompt(build_prompt(render_sources(sources, display_path), question))
        completion = self.backend.complete(
            raw_prompt, max_tokens=self.settings.answer_tokens, stop=list(STOP), prefix_cache_key=cache_key,
        )
        parsed = parse_output(completion.text)
        label_added = not parsed.labelled and not says_unknown(parsed.answer)
        if label_added:
            completion, parsed = self._ask_for_the_answer(raw_prompt, completion, cache_key)
        return _Draft(route, tuple(sources), parsed.answer, parsed.evidence, completion,
                      answer_label_added=label_added)

    def _short_draft(self, question: str, route: Route, sources: list["Source"]) -> _Draft:
        """A short cited answer over the selected evidence; the quote is the cited sentence itself.

        The instructions come first and are the same for every question: their KV state is
        kept on disk (``cache_dir/prompt-states``) and in memory, so a question reads only
        its evidence and itself. Generation stops at the end of the answer's line.
        """
        gate = self._answerability(question, sources)
        if not gate.answerable:  # nothing to read the answer from: say so, and spend no generation
            return self._refusal(route, sources, gate)
        prompt = build_short_prompt(render_sources(sources, display_path), question)
        raw = self._raw_prompt(prompt, SHORT_PREFILL)
        key = self._instructions_state(raw[: raw.index(prompt.user())])
        completion = self.backend.complete(
            raw, max_tokens=self.settings.short_answer_tokens, stop=list(SHORT_STOP), prefix_cache_key=key,
        )
        text = first_line(completion.text) or f"{UNKNOWN}。"  # an empty line answers nothing
        return _Draft(route, tuple(sources), text, "", completion, short=True, gate=gate)

    def _answerability(self, question: str, sources: list["Source"]) -> "Answerability":
        from pipeline.answer.answerability import answerability
        from pipeline.japanese import default_analyzer

        return answerability(question, [_with_title(s) for s in sources], default_analyzer())

    @staticmethod
    def _refusal(route: Route, sources: list["Source"], gate: "Answerability") -> _Draft:
        """「資料からは分かりません」 with the gate's reason, shown and in the route's reasons."""
        route = replace(route, reasons=route.reasons + (f"回答しない: {gate.reason}",))
        return _Draft(route, tuple(sources), f"{UNKNOWN}。", "", None, short=True, gate=gate, label=f"({gate.reason})")

    def _instructions_state(self, instructions: str) -> str | None:
        """The key of the instructions' saved KV state (prepared on first use), where the backend keeps one."""
        prepare = getattr(self.backend, "prepare_prefix", None)
        if prepare is None or not self.backend.info.supports_prefix_cache:
            return None
        key = self._prefix_key(instructions)
        try:
            prepare(instructions, key, Path(self.settings.cache_dir) / "prompt-states")
        except OSError:  # a read-only cache: the in-memory KV reuse still applies
            return None
        return key

    def _ask_for_the_answer(self, raw_prompt, first, cache_key):
        """The model quoted (or wrote) without reaching 「回答:」: write the label for it and let it answer.

        On the jsquad articles the embedded 1.5B model did this for about one question in five,
        mostly by quoting a whole paragraph until the token budget ran out. The prompt and the
        model's own text are a prefix of the new prompt, so a llama.cpp backend reads only the label.
        """
        evidence = close_evidence(first.text)
        second = self.backend.complete(
            raw_prompt + evidence + ANSWER_LABEL, max_tokens=ANSWER_AFTER_EVIDENCE_TOKENS,
            stop=list(STOP_AFTER_LABEL), prefix_cache_key=cache_key,
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

    def _raw_prompt(self, prompt, prefill: str = ASSISTANT_PREFILL) -> str:
        fmt = getattr(self.backend, "format_chat", None)
        if fmt is None:
            return render_plain(prompt, prefill)
        return fmt(prompt.system, prompt.user()) + prefill

    def prefix_text(self, context: str) -> str:
        """The stable part of the raw prompt: everything before the question."""
        raw = self._raw_prompt(build_prompt(context, "\x00"))
        return raw[: raw.index(build_prompt(context, "\x00").user())]

    def _ensure_prefix(self, context: str) -> str | None:
        prepare = getattr(self.backend, "prepare_prefix", None)
        key = self._context_key(context)
        if prepare is None:
            return key
        prepare(self.prefix_text(context), key, self.prefix_state_dir())
        return key

    def _extractive(self, question, route, sources, max_sentences: int = 3) -> _Draft:
        from pipeline.answer.backends.extractive import EXTRACTIVE_LABEL, extractive_answer
        from pipeline.japanese import default_analyzer

        text = extractive_answer(
            question, [(s.number, s.chunk.text) for s in sources], default_analyzer(), max_sentences=max_sentences,
        )
        # The label says how the answer was made; it is not a claim to check.
        body = text.removeprefix(EXTRACTIVE_LABEL).strip()
        return _Draft(route, tuple(sources), body, "", None, label=EXTRACTIVE_LABEL)

    def _grounded(self, question: str, checked: "CheckedAnswer", draft: _Draft) -> bool:
        """False when the answer is shown to be wrong, not merely unconfirmed.

        Wrong: it names what neither the sources nor the question name (an invented person,
        place, title, a corrupted word: `missing_names`), or the checker finds its source stating otherwise (a number, a negation, who did what).
        An answer the checker only cannot confirm is kept, flagged by the citation policy:
        on multi-hop questions (JEMHopQA) a right answer joins two sources and no single
        cited span entails it, and replacing those answers lost 10 right ones in 30.
        """
        from pipeline.answer.answerability import missing_names
        from pipeline.check.checker import CONTRADICTION_REASONS
        from pipeline.japanese import default_analyzer

        every_source = [_with_title(s) for s in draft.sources] + [question]
        for v in checked.verdicts:
            if missing_names(v.sentence.text, every_source, default_analyzer()):
                return False
            holds = v.label == "supported" or v.fixed_citations
            if not holds and any(r.startswith(CONTRADICTION_REASONS) for r in v.reasons):
                return False
        return True

    def _fall_back(self, question: str, draft: _Draft) -> _Draft:
        """The model's answer is not borne out by its sources: a source sentence that answers, or a refusal.

        A source sentence is shown (labelled) only when one shares enough of the question's
        words (`MIN_FALLBACK_SENTENCE`); otherwise the model most likely answered a question
        its sources cannot answer, and 「資料からは分かりません」 is the honest reply.
        """
        from pipeline.answer.answerability import MIN_FALLBACK_SENTENCE

        gate = draft.gate
        answers = gate is None or gate.features.get("best_sentence", 1.0) >= MIN_FALLBACK_SENTENCE
        fallback = self._extractive(question, draft.route, list(draft.sources), max_sentences=1) if answers else None
        if fallback is None or says_unknown(fallback.text):
            return replace(draft, text=f"{UNKNOWN}。", evidence="", label=REFUSAL_LABEL.format(answer=claim_text(draft.text)),
                           replaced=draft.text)
        return replace(fallback, completion=draft.completion, label=FALLBACK_LABEL.format(answer=claim_text(draft.text)),
                       replaced=draft.text, short=True, gate=gate)

    def _finish(self, question: str, draft: _Draft, policy, fallback_from, tokens_read, started) -> Answer:
        """Check the draft, apply the policy, and build the one `Answer`."""
        from pipeline.check import apply_policy

        checked = None
        refused = False
        recall = precision = None
        if self.checker is not None and draft.text and not says_unknown(draft.text):
            checked = self.checker.check(draft.text, list(draft.sources))
            if draft.short and self.settings.extractive_fallback and not self._grounded(question, checked, draft):
                draft = self._fall_back(question, draft)
                checked = None if says_unknown(draft.text) else self.checker.check(draft.text, list(draft.sources))
        shown = draft.text
        if checked is not None:
            shown, refused = apply_policy(checked, draft.text, policy, self.settings.refuse_below)
            if draft.short and not draft.evidence:  # the quote: the cited sentences, as the user sees them cited
                draft = replace(draft, evidence=quote_cited(checked, list(draft.sources)))
            recall, precision = figures_as_shown(checked, policy, refused)
        if draft.label:
            shown = f"{draft.label}\n{shown}"
        return Answer(
            question=question, answer=shown, raw_answer=draft.text, evidence=draft.evidence,
            mode=draft.route.mode, route=draft.route, sources=draft.sources, checked=checked,
            backend=self.backend.info.name, refused=refused, fallback_from=fallback_from,
            completion=draft.completion, seconds=round(time.perf_counter() - started, 2),
            tokens_read=tokens_read, label=draft.label, answer_label_added=draft.answer_label_added,
            citation_recall=recall, citation_precision=precision,
            checker=self.checker.describe() if self.checker is not None else None,
            replaced_answer=draft.replaced,
            short_answer=None if refused else _short_answer(question, draft.text),
            reranker=self.settings.reranker if self.reranker is not None else None,
        )


def _short_answer(question: str, text: str) -> str | None:
    """The answer phrase of a one-sentence answer; None for a refusal or several sentences."""
    from pipeline.answer.phrase import answer_phrase
    from pipeline.japanese import default_analyzer

    sentences = parse_answer(text)
    if len(sentences) != 1 or says_unknown(text):
        return None
    return answer_phrase(question, sentences[0].text, default_analyzer())


FALLBACK_LABEL = "(モデルの回答「{answer}」は引用した資料で確かめられなかったため、資料の文をそのまま示します)"
REFUSAL_LABEL = "(モデルの回答「{answer}」は資料で確かめられず、質問に答える資料の文も見つかりませんでした)"


def first_line(text: str) -> str:
    """The first non-empty line of a completion (a model may open with a line break)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def shown_citations(v: "Verdict") -> tuple[int, ...]:
    """The sources a sentence cites as shown: the policy moves an unsupported sentence's
    citation to the source that supports it (`apply_policy`)."""
    return v.fixed_citations if v.label != "supported" and v.fixed_citations else v.cited


def quote_cited(checked: "CheckedAnswer", sources: "list[Source]") -> str:
    """「the cited sentence」[n] for each source the answer cites as shown.

    The short answer style does not ask the model to quote (≈ 60 generated tokens, 5 s on
    two cores): the quote is the sentence of the cited span that the checker matched.
    """
    by_number = {s.number: s for s in sources}
    quotes: dict[int, str] = {}
    for v in checked.verdicts:
        for n in shown_citations(v):
            source = by_number.get(n)
            span = next((sp for sp in v.spans if source is not None and sp.path == source.chunk.path
                         and source.chunk.start <= sp.start < source.chunk.end), None)
            if source is None or span is None or n in quotes:
                continue
            c = source.chunk
            quotes[n] = f"「{c.text[span.start - c.start : span.end - c.start].strip()}」[{n}]"
    return " ".join(quotes.values())


def _with_title(source: "Source") -> str:
    """A source as the model reads it: its title (題名) and its text."""
    c = source.chunk
    return f"{c.title}\n{c.text}" if c.title else c.text


def figures_as_shown(checked: "CheckedAnswer", policy: str, refused: bool) -> tuple[float | None, float | None]:
    """ALCE citation recall and precision of the answer as the policy shows it.

    The checker's own figures (`checked.citation_recall` / `_precision`, what `rag eval
    answers` reports) judge the model's citations. The policy then moves a citation to
    the source that supports its sentence (supported_by_other, or uncited with such a
    source) and, under "strip", drops what stays unsupported: the figures printed under
    an answer describe the citations the user reads, by the checker's own definitions
    (`CheckedAnswer.of`). A refusal cites nothing: None.
    """
    from pipeline.check import CheckedAnswer

    if refused:
        return None, None
    shown = []
    for v in checked.verdicts:
        if v.label != "supported" and v.fixed_citations:
            v = replace(v, label="supported", cited=v.fixed_citations)  # now cites its support
        elif v.label != "supported" and policy == "strip":
            continue  # removed from the answer
        shown.append(v)
    figures = CheckedAnswer.of(shown)
    return round(figures.citation_recall, 4), round(figures.citation_precision, 4)


def answer_reranker(settings: "Settings") -> "Reranker | None":
    """The configured reranker when `settings.rerank`; None, with a logged warning, when its model is
    unavailable: answers then rest on the fused order, which is what they rested on before."""
    from pipeline.errors import ModelUnavailable
    from pipeline.index.rerank import load_reranker

    if not settings.rerank:
        return None
    try:
        return load_reranker(settings)
    except ModelUnavailable as err:
        log.warning("検索結果を再順位付けせずに答えます: %s", err)
        return None


def _confidence(retrieval: "Retrieval") -> float:
    """Agreement of the two retrievers: top-1 document match and overlap of their top documents."""
    dense, sparse = retrieval.dense[:AGREEMENT_DEPTH], retrieval.sparse[:AGREEMENT_DEPTH]
    if not dense or not sparse:
        return 0.0
    d = [h.chunk.path for h in dense]
    s = [h.chunk.path for h in sparse]
    top1 = 1.0 if d[0] == s[0] else 0.0
    overlap = len(set(d) & set(s)) / len(set(d) | set(s))
    return round(0.5 * top1 + 0.5 * overlap, 3)

