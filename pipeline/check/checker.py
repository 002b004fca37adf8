"""The citation checker: is each answer sentence supported by the sources it cites?

`CitationChecker.support(premise, claim)` is a calibrated probability that the
premise supports the claim, from, cheapest first:

* the cheap signals (`pipeline.check.features`): word, bigram and phrase coverage;
  numbers, dates and quantities normalized and required to match; proper nouns and
  Latin words required to appear; case roles, negation and modality compared
  (`pipeline.check.predicates`);
* the semantic stage, when there is one (`pipeline.check.semantic`; built from an
  `Embedder` when one is given): its score for the closest source sentence;
* the fitted combination of those (`pipeline.check.model`, weights in ``fitted.json``);
* then, only for claims the above leave uncertain (`JUDGE_BAND`), a judge: any callable
  ``judge(premise, claim) -> P(supported)`` (`pipeline.answer.judge.llm_judge` makes one
  from an LLM backend), reading the `JUDGE_SENTENCES` source sentences closest to the claim.

Sentences of a source that give orders to the model are never evidence
(`pipeline.check.evidence`).

`check(answer, sources)` gives one `Verdict` per answer sentence that asserts
something, with ALCE-style citation recall and precision and the fraction supported
(`CheckedAnswer`); `pipeline.check.policy.apply_policy` turns that into the text shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from pipeline.check.analysis import Analysis, analyze, in_text
from pipeline.check.citations import AnswerSentence, claim_text, has_claim, parse_answer, span_in_chunk
from pipeline.check.features import Premise, feature_names, pair_features, sentence_scores
from pipeline.check.model import FittedWeights, linear_probability, load_weights
from pipeline.check.numbers import unmatched_quantities
from pipeline.check.semantic import EmbeddingSimilarity, SemanticStage
from pipeline.check.verdicts import CheckedAnswer, Verdict
from pipeline.documents import Source, Span

if TYPE_CHECKING:
    from pipeline.index.embedder import Embedder
    from pipeline.japanese import Analyzer
    from pipeline.settings import Settings

__all__ = ["CitationChecker", "DEFAULT_THRESHOLD", "JUDGE_BAND", "JUDGE_SENTENCES", "Judge"]

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


class CitationChecker:
    """Tests answer sentences against the sources they cite.

    `settings.citation_threshold`, when set, replaces the threshold fitted for the mode
    ("embed" with an embedder or another semantic stage of that mode, "cheap" without).
    `embedder` is any `Embedder` (None: the weights fitted without the semantic feature
    are used); `semantic` is any `SemanticStage` instead. `judge(premise, claim)`, when
    given, returns P(supported) in [0, 1] for the claims the rest leaves uncertain.
    `weights` defaults to the shipped ``fitted.json``.
    """

    def __init__(self, settings: "Settings | None" = None, embedder: "Embedder | None" = None,
                 judge: Judge | None = None, analyzer: "Analyzer | None" = None, *,
                 semantic: SemanticStage | None = None, weights: FittedWeights | None = None):
        from pipeline.japanese import default_analyzer

        self.settings = settings
        self.embedder = embedder
        self.semantic = semantic or (EmbeddingSimilarity(embedder) if embedder is not None else None)
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
        fitted = self.weights.thresholds.get(self.mode, DEFAULT_THRESHOLD)
        self.threshold = float(configured if configured is not None else fitted)
        # Whoever builds the checker decides on the judge (api: settings.citation_llm_judge).
        self.use_judge = judge is not None
        self.judge_calls = 0

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
        return pair_features(premises, claim, scores, feature)

    def _probability(self, f: dict[str, float]) -> float:
        return linear_probability(self.model, [f[n] for n in self.feature_names])

    def _in_band(self, p: float) -> bool:
        """Is there a judge, and does it have a say on `p`?"""
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
        p = self._probability(self._features([pr], ca, [scores]))
        if not self._in_band(p):
            return p
        return self._with_judge(p, self._judge_evidence([pr], ca, [scores]), c)

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
        # One call to the semantic stage for every source sentence and every claim.
        scores: dict[int, np.ndarray] = {}
        if self.semantic is not None and claims:
            numbers = list(premises)
            for n, m in zip(numbers, self.semantic.score([premises[n].texts for n in numbers], claims)):
                scores[n] = m
        verdicts = []
        for i, sent in enumerate(sentences):
            row = {n: (m[i] if len(premises[n].texts) else None) for n, m in scores.items()}
            verdicts.append(self._verdict(sent, by_number, premises, row))
        return CheckedAnswer.of(verdicts)

    def _score(self, numbers: Sequence[int], premises: dict[int, Premise], claim: Analysis,
               scores: dict[int, np.ndarray | None], claim_str: str, judge: bool = True) -> tuple[float, dict]:
        ps = [premises[n] for n in numbers]
        sc = [scores.get(n) for n in numbers]
        f = self._features(ps, claim, sc)
        p = self._probability(f)
        if judge and self._in_band(p):
            p = self._with_judge(p, self._judge_evidence(ps, claim, sc), claim_str)
        return p, f

    def _verdict(self, sent: AnswerSentence, by_number: dict[int, Source], premises: dict[int, Premise],
                 scores: dict[int, np.ndarray | None]) -> Verdict:
        c = claim_text(sent.text)
        claim = analyze(c, self.analyzer)
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


def _reasons(f: dict[str, float], claim: Analysis, premise: Analysis) -> list[str]:
    out = []
    if f["number_mismatch"]:
        qs = unmatched_quantities(claim.quantities, premise.quantities)
        out.append("数値が資料と一致しません: " + "、".join(q.surface for q in qs))
    if f["name_mismatch"]:
        names = sorted({w for w in claim.names if w not in premise.text})
        out.append("資料にない固有名詞: " + "、".join(names))
    if f["role_conflict"]:
        out.append("誰が何をしたか (格関係) が資料と食い違います")
    if f["negation_mismatch"]:
        out.append("肯定・否定が資料と逆です")
    if f["modality_mismatch"]:
        out.append("資料は断定していません")
    if f["coverage"] < 0.6 and not out:
        missing = [s for w, s, _ in claim.content if not (in_text(w, premise) or in_text(s, premise))]
        out.append("資料にない語: " + "、".join(dict.fromkeys(missing)))
    if not out:
        out.append("資料の内容から言えません")
    return out
