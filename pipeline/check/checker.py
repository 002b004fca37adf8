"""The citation checker: is each answer sentence supported by the sources it cites?

`CitationChecker.support(premise, claim)` is a calibrated probability that the
premise supports the claim, from, cheapest first:

* the cheap signals (`pipeline.check.features`): word, bigram and phrase coverage;
  numbers, dates and quantities normalized and required to match; proper nouns and
  Latin words required to appear; case roles, negation and modality compared
  (`pipeline.check.predicates`);
* the semantic stage, when there is one (`pipeline.check.semantic`): the entailment
  model's P(entailed | cited source, claim) (mode "entailment", the default when its
  artifact loads: `CitationChecker.from_settings`), or an `Embedder`'s cosine for the
  closest source sentence (mode "embed");
* mode "embed" and "cheap": the fitted combination of those (`pipeline.check.model`,
  weights in ``fitted.json``); mode "entailment": P(entailed) itself, unless a hard
  conflict (`HARD_CONFLICTS`: a number the cited sources contradict, or a predicate they
  state with the opposite polarity) pushes it under the threshold (`CONFLICT_SHARE`).
  The model was trained and calibrated for this task, and its threshold chosen on
  held-out articles (its ``config.json``); a logistic refit on top would need its scores
  on data it has not seen, which our tune sets are not;
* then, only for claims the above leave uncertain (`JUDGE_BAND`), a judge: any callable
  ``judge(premise, claim) -> P(supported)`` (`pipeline.answer.judge.llm_judge` makes one
  from an LLM backend), reading the `JUDGE_SENTENCES` source sentences closest to the claim.

Sentences of a source that give orders to the model are never evidence
(`pipeline.check.evidence`).

`check(answer, sources)` gives one `Verdict` per answer sentence that asserts
something, with ALCE-style citation recall and precision and the fraction supported
(`CheckedAnswer`); `pipeline.check.policy.apply_policy` turns that into the text shown.
It scores each (claim, source) pair at most once, in batches: first every claim against
the sources it cites, then, for the claims those do not support, against the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from pipeline.check.analysis import Analysis, analyze, in_text
from pipeline.check.citations import AnswerSentence, claim_text, has_claim, parse_answer, span_in_chunk
from pipeline.check.features import Premise, feature_names, pair_features, sentence_scores
from pipeline.check.model import FittedWeights, linear_probability, load_weights
from pipeline.check.numbers import Quantity, unmatched_quantities
from pipeline.check.semantic import ENTAILMENT_MODE, EmbeddingSimilarity, SemanticStage, choose_stage
from pipeline.check.verdicts import CheckedAnswer, Verdict
from pipeline.documents import Source, Span

if TYPE_CHECKING:
    from pipeline.index.embedder import Embedder
    from pipeline.japanese import Analyzer
    from pipeline.settings import Settings

__all__ = [
    "CONFLICT_SHARE",
    "CitationChecker",
    "DEFAULT_THRESHOLD",
    "HARD_CONFLICTS",
    "JUDGE_BAND",
    "JUDGE_SENTENCES",
    "Judge",
]

Judge = Callable[[str, str], float]

# Used only when fitted.json has no threshold for the mode.
DEFAULT_THRESHOLD = 0.5
# The judge is asked only when the probability falls in this band, and reads the few
# source sentences closest to the claim (short prompts: ≈ 50 tokens/s here).
JUDGE_BAND = (0.15, 0.85)
JUDGE_SENTENCES = 3
# A sentence without citations, or whose citations fail, is tried against the other
# sources; the judge is asked about the best of them only when its probability reaches
# this share of the threshold (below it, the judge cannot lift it over).
OTHER_SOURCE_JUDGE_SHARE = 0.8
# Mode "entailment": cheap signals that alone make a claim wrong whatever the model says (it
# reads meaning, and a changed number hardly changes the meaning). Only signals of a
# contradiction, and only precise ones. Measured on correct claims (JNLI valid 349,
# claims_jsquad 250): a quantity the source contradicts (same unit or both counters,
# another value) fires on 0.6 % / 0.4 % of them, negation on 0 %; a quantity the source
# merely lacks (男女 → 二人) on 3.4 % / 0.4 % and a name it lacks (the article's own name,
# in its title) on 0.6 % / 9.2 %: those are left to the model. A case-role conflict fires
# on 1.7 % / 2.4 %, but the model reads word order at chance (held-out role pairs AUROC
# 0.51 without this rule, 1.00 with it), so it stays hard. Read more narrowly since (a noun +
# する is its own predicate, bare する and compound particles are none, a topic beside が and a
# passive's subject may be any role), the hard conflicts flag 11 of 1,670 correct held-out
# claims (was 34 for roles alone) and still catch every swapped pair
# (benchmarks/results/citations.md).
HARD_CONFLICTS = ("number_contradiction", "negation_mismatch", "role_conflict")
# With a hard conflict the score is P(entailed) × threshold × this: always under the
# threshold, and still ordered by P (for AUROC and for choosing among sources).
CONFLICT_SHARE = 0.5
# Pairs per semantic-stage call when scoring pairs one by one (`support_many`).
BATCH_PAIRS = 64


class CitationChecker:
    """Tests answer sentences against the sources they cite.

    `settings.citation_threshold`, when set, replaces the mode's own threshold (the one
    fitted for "embed" or "cheap" in ``fitted.json``; the entailment model's). `embedder`
    is any `Embedder` (mode "embed"; None: the weights fitted without the semantic feature
    are used, mode "cheap"); `semantic` is any `SemanticStage` instead (one of mode
    "entailment" has a ``threshold``). `from_settings` chooses the stage as
    ``settings.citation_model`` says. `judge(premise, claim)`, when given, returns
    P(supported) in [0, 1] for the claims the rest leaves uncertain. `weights` defaults to
    the shipped ``fitted.json``. `fallback`: why the stage is not the one asked for (shown
    in `describe`).
    """

    def __init__(self, settings: "Settings | None" = None, embedder: "Embedder | None" = None,
                 judge: Judge | None = None, analyzer: "Analyzer | None" = None, *,
                 semantic: SemanticStage | None = None, weights: FittedWeights | None = None,
                 fallback: str | None = None):
        from pipeline.japanese import default_analyzer

        self.settings = settings
        self.embedder = embedder
        self.semantic = semantic or (EmbeddingSimilarity(embedder) if embedder is not None else None)
        self.fallback = fallback
        self.judge = judge
        self.analyzer = analyzer or default_analyzer()
        self.mode = self.semantic.mode if self.semantic is not None else "cheap"
        self.feature_names = feature_names(self.semantic.feature if self.semantic is not None else None)
        self.weights = weights if weights is not None else load_weights()
        self.model = self.weights.models.get(self.mode)
        if self.model is not None and self.model.features != self.feature_names:
            from pipeline.check.model import REFIT_COMMAND
            from pipeline.errors import ModelUnavailable

            raise ModelUnavailable(
                f"引用チェッカーの重み ({self.weights.path or 'fitted.json'}) の {self.mode} は別の特徴で学習されています。\n"
                f"`{REFIT_COMMAND}` で作り直してください。"
            )
        configured = settings.citation_threshold if settings is not None else None
        if self.entails:
            own = self.semantic.threshold  # the entailment model's, chosen on held-out articles
        else:
            own = self.weights.thresholds.get(self.mode, DEFAULT_THRESHOLD)
        self.threshold = float(configured if configured is not None else own)
        # Whoever builds the checker decides on the judge (api: settings.citation_llm_judge).
        self.use_judge = judge is not None
        self.judge_calls = 0

    @classmethod
    def from_settings(cls, settings: "Settings", embedder: "Callable[[], Embedder | None] | None" = None,
                      judge: Judge | None = None, analyzer: "Analyzer | None" = None) -> "CitationChecker":
        """The checker ``settings.citation_model`` asks for ("auto": the entailment model when its
        artifact loads, else the embedder with a logged warning). `embedder` is called only
        when the embedding stage is used. The model loads here, once per checker."""
        stage, fallback = choose_stage(settings, embedder)
        return cls(settings, judge=judge, analyzer=analyzer, semantic=stage, fallback=fallback)

    @property
    def entails(self) -> bool:
        """Is the semantic stage an entailment model (mode "entailment")?"""
        return self.mode == ENTAILMENT_MODE

    def describe(self) -> dict:
        """What checks the citations: mode, threshold, judge, and why the mode is a fallback."""
        return {"mode": self.mode, "threshold": round(self.threshold, 4), "judge": self.use_judge,
                "fallback": self.fallback}

    # ---- one pair ---------------------------------------------------------

    def _read(self, premise: str, claim: str) -> tuple[Premise, Analysis, np.ndarray | None]:
        """The premise and the claim analysed, and the semantic score of each premise sentence."""
        pr = Premise.read(premise, self.analyzer)
        scores = None
        if self.semantic is not None:
            scores = self.semantic.score([pr.texts], [claim])[0][0]
        return pr, analyze(claim, self.analyzer), scores

    def features(self, premise: str, claim: str) -> dict[str, float]:
        """Named feature values for a pair (for inspection and for fitting)."""
        pr, ca, scores = self._read(premise, claim_text(claim))
        return self._features([pr], ca, [scores])

    def _features(self, premises: Sequence[Premise], claim: Analysis, scores: Sequence[np.ndarray | None]) -> dict[str, float]:
        feature = self.semantic.feature if self.semantic is not None else None
        f = pair_features(premises, claim, scores, feature)
        if self.entails:
            source = [q for pr in premises for q in pr.whole.quantities]
            f["number_contradiction"] = float(len(_contradicted(claim.quantities, source)))
        return f

    def _probability(self, f: dict[str, float]) -> float:
        if self.entails:
            p = f[self.semantic.feature]
            return p * self.threshold * CONFLICT_SHARE if _hard_conflict(f) else p
        return linear_probability(self.model, [f[n] for n in self.feature_names])

    def _asks_judge(self, p: float, f: dict[str, float]) -> bool:
        """Is there a judge, and does it have a say on `p` (never on a hard conflict in mode "entailment")?"""
        if self.entails and _hard_conflict(f):
            return False
        return self.use_judge and JUDGE_BAND[0] <= p <= JUDGE_BAND[1]

    def _with_judge(self, p: float, premise: str, claim: str) -> float:
        self.judge_calls += 1
        return self.weights.judge.combine(p, float(self.judge(premise, claim)))

    def cheap_support(self, premise: str, claim: str) -> float:
        """Calibrated probability without the judge (cheap signals and the semantic stage)."""
        return self._probability(self.features(premise, claim))

    def support(self, premise: str, claim: str) -> float:
        """Calibrated probability that `premise` supports `claim` (markers in `claim` ignored)."""
        c = claim_text(claim)
        pr, ca, scores = self._read(premise, c)
        return self._support(pr, ca, scores, c)

    def _support(self, pr: Premise, ca: Analysis, scores: np.ndarray | None, claim: str) -> float:
        f = self._features([pr], ca, [scores])
        p = self._probability(f)
        if not self._asks_judge(p, f):
            return p
        return self._with_judge(p, self._judge_evidence([pr], ca, [scores]), claim)

    def support_many(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """`support` of each (premise, claim), the semantic stage asked once per `BATCH_PAIRS` pairs."""
        out: list[float] = []
        for start in range(0, len(pairs), BATCH_PAIRS):
            batch = pairs[start:start + BATCH_PAIRS]
            premises = [Premise.read(p, self.analyzer) for p, _ in batch]
            claims = [claim_text(c) for _, c in batch]
            scores: list[np.ndarray | None] = [None] * len(batch)
            if self.semantic is not None:
                arrays = self.semantic.score([pr.texts for pr in premises], claims, {(k, k) for k in range(len(batch))})
                scores = [m[k] for k, m in enumerate(arrays)]
            for pr, c, sc in zip(premises, claims, scores):
                out.append(self._support(pr, analyze(c, self.analyzer), sc, c))
        return out

    def judge_evidence(self, premise: str, claim: str) -> str:
        """What the judge reads for this pair: the premise sentences closest to the claim."""
        pr, ca, scores = self._read(premise, claim_text(claim))
        return self._judge_evidence([pr], ca, [scores])

    def _judge_evidence(self, premises: Sequence[Premise], claim: Analysis, scores: Sequence[np.ndarray | None]) -> str:
        """The `JUDGE_SENTENCES` sentences closest to the claim, in source order."""
        ranked = []
        for i, (pr, sc) in enumerate(zip(premises, scores)):
            for k, s in enumerate(sentence_scores(pr, claim, sc)):
                ranked.append((s, i, k))
        keep = sorted(sorted(ranked, reverse=True)[:JUDGE_SENTENCES], key=lambda t: (t[1], t[2]))
        return "\n".join(premises[i].texts[k] for _, i, k in keep)

    # ---- whole answers ----------------------------------------------------

    def check(self, answer: str, sources: list[Source]) -> CheckedAnswer:
        """A verdict per answer sentence that asserts something, plus ALCE recall/precision."""
        by_number = {s.number: s for s in sources}
        sentences = [s for s in parse_answer(answer) if has_claim(s.text)]
        premises = {s.number: Premise.read(s.chunk.text, self.analyzer) for s in sources}
        claims = [claim_text(s.text) for s in sentences]
        analyses = [analyze(c, self.analyzer) for c in claims]
        cited = [[n for n in s.citations if n in premises] for s in sentences]
        scores = _PairScores(self.semantic, premises, claims)
        # Every claim against the sources it cites, in one call (an embedding stage scores all pairs).
        scores.need((i, n) for i, ns in enumerate(cited) for n in ns)
        # Then, in one more call, the other sources, for the claims their citations do not support.
        others = []
        for i, ns in enumerate(cited):
            missing = [(i, n) for n in premises if n not in ns and not scores.has(i, n)]
            if missing and (not ns or self._score(ns, premises, analyses[i], scores.row(i), claims[i], False)[0]
                            < self.threshold):
                others += missing
        scores.need(others)
        verdicts = [self._verdict(sent, by_number, premises, scores.row(i), analyses[i])
                    for i, sent in enumerate(sentences)]
        return CheckedAnswer.of(verdicts)

    def _score(self, numbers: Sequence[int], premises: dict[int, Premise], claim: Analysis,
               scores: "_Row", claim_str: str, judge: bool = True) -> tuple[float, dict]:
        ps = [premises[n] for n in numbers]
        sc = [scores.get(n) for n in numbers]
        f = self._features(ps, claim, sc)
        p = self._probability(f)
        if judge and self._asks_judge(p, f):
            p = self._with_judge(p, self._judge_evidence(ps, claim, sc), claim_str)
        return p, f

    def _verdict(self, sent: AnswerSentence, by_number: dict[int, Source], premises: dict[int, Premise],
                 scores: "_Row", claim: Analysis) -> Verdict:
        c = claim_text(sent.text)
        cited = tuple(n for n in sent.citations if n in by_number)
        reasons: list[str] = []
        missing = [n for n in sent.citations if n not in by_number]
        if missing:
            reasons.append("存在しない出典番号: " + ", ".join(f"[{n}]" for n in missing))

        def score(numbers: Sequence[int], judge: bool = True) -> tuple[float, dict]:
            return self._score(numbers, premises, claim, scores, c, judge)

        def best_other(exclude: Sequence[int]) -> tuple[int | None, float]:
            best_n, best_p = None, 0.0
            for n in by_number:
                if n in exclude:
                    continue
                p, _ = score([n], judge=False)
                if p > best_p:
                    best_n, best_p = n, p
            if best_n is not None and best_p >= self.threshold * OTHER_SOURCE_JUDGE_SHARE and self.use_judge:
                best_p, _ = score([best_n])
            return best_n, best_p

        if not cited:
            n, p = best_other(())
            fixed = (n,) if n is not None and p >= self.threshold else ()
            reasons.append("出典が付いていません")
            return Verdict(sent, "uncited", p, (), fixed, tuple(reasons), ())

        p, f = score(cited)
        spans = tuple(self._best_span(by_number[n], premises[n], claim, scores.get(n)) for n in cited)
        spans = tuple(s for s in spans if s is not None)
        if p >= self.threshold:
            # ALCE precision: a citation is needed unless the others do without it.
            needed = []
            for n in cited:
                alone, _ = score([n], judge=False)
                rest = [m for m in cited if m != n]
                if alone >= self.threshold:
                    needed.append(n)
                elif rest:
                    without, _ = score(rest, judge=False)
                    if without < self.threshold:
                        needed.append(n)
                else:
                    needed.append(n)
            return Verdict(sent, "supported", p, cited, tuple(needed), tuple(reasons), spans)
        reasons += _reasons(f, claim, Analysis.merge([premises[n].whole for n in cited]))
        n, q = best_other(cited)
        if n is not None and q >= self.threshold:
            reasons.append(f"[{n}] が裏付けています")
            return Verdict(sent, "supported_by_other", p, cited, (n,), tuple(reasons), spans)
        return Verdict(sent, "unsupported", p, cited, (), tuple(reasons), spans)

    def _best_span(self, source: Source, premise: Premise, claim: Analysis, scores: np.ndarray | None) -> Span | None:
        if not premise.spans:
            return None
        ranked = sentence_scores(premise, claim, scores)
        s, e = premise.spans[int(np.argmax(ranked))]
        return span_in_chunk(source.chunk, s, e)


class _PairScores:
    """The semantic stage's scores of one answer, per (claim index, source number), computed
    when first needed and at most once; `need` asks for many pairs in one stage call."""

    def __init__(self, stage: SemanticStage | None, premises: dict[int, Premise], claims: Sequence[str]):
        self.stage = stage
        self.premises = premises
        self.claims = claims
        self.numbers = list(premises)
        self.rows: dict[tuple[int, int], np.ndarray | None] = {}

    def has(self, i: int, n: int) -> bool:
        return (i, n) in self.rows or self.stage is None or not self.premises[n].texts

    def need(self, pairs: Iterable[tuple[int, int]]) -> None:
        missing = sorted({(i, n) for i, n in pairs if not self.has(i, n)})
        if not missing:
            return
        index = {n: g for g, n in enumerate(self.numbers)}
        arrays = self.stage.score([self.premises[n].texts for n in self.numbers], self.claims,
                                  {(i, index[n]) for i, n in missing})
        for n, m in zip(self.numbers, arrays):
            for i in range(len(self.claims)):
                if not np.isnan(m[i]).any():  # a stage that pays per pair leaves the others NaN
                    self.rows.setdefault((i, n), m[i])
        for pair in missing:
            self.rows.setdefault(pair, None)

    def get(self, i: int, n: int) -> np.ndarray | None:
        self.need([(i, n)])
        return self.rows.get((i, n))

    def row(self, i: int) -> "_Row":
        return _Row(self, i)


class _Row:
    """One claim's scores, by source number (`_PairScores.get`)."""

    def __init__(self, scores: _PairScores, i: int):
        self.scores, self.i = scores, i

    def get(self, n: int) -> np.ndarray | None:
        return self.scores.get(self.i, n)


def _hard_conflict(f: dict[str, float]) -> bool:
    return any(f[name] for name in HARD_CONFLICTS)


def _contradicted(claim: Sequence[Quantity], source: Sequence[Quantity]) -> list[Quantity]:
    """The claim's quantities the source states otherwise: unmatched, while the source has one
    of the same unit (or, for counters, any counter; for a bare number, a bare one)."""
    def same_kind(a: Quantity, b: Quantity) -> bool:
        return a.unit == b.unit or (a.kind == "count" and b.kind == "count")

    return [q for q in unmatched_quantities(claim, source) if any(same_kind(q, s) for s in source)]


# Reasons that say the source states otherwise (not only that it does not say so).
REASON_NUMBERS = "数値が資料と一致しません"
REASON_ROLES = "誰が何をしたか (格関係) が資料と食い違います"
REASON_NEGATION = "肯定・否定が資料と逆です"
CONTRADICTION_REASONS = (REASON_NUMBERS, REASON_ROLES, REASON_NEGATION)


def _reasons(f: dict[str, float], claim: Analysis, premise: Analysis) -> list[str]:
    out = []
    if f["number_mismatch"]:
        qs = unmatched_quantities(claim.quantities, premise.quantities)
        out.append(f"{REASON_NUMBERS}: " + "、".join(q.surface for q in qs))
    if f["name_mismatch"]:
        names = sorted({w for w in claim.names if w not in premise.text})
        out.append("資料にない固有名詞: " + "、".join(names))
    if f["role_conflict"]:
        out.append(REASON_ROLES)
    if f["negation_mismatch"]:
        out.append(REASON_NEGATION)
    if f["modality_mismatch"]:
        out.append("資料は断定していません")
    if f["coverage"] < 0.6 and not out:
        missing = [s for w, s, _ in claim.content if not (in_text(w, premise) or in_text(s, premise))]
        out.append("資料にない語: " + "、".join(dict.fromkeys(missing)))
    if not out:
        out.append("資料の内容から言えません")
    return out
