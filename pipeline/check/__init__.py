"""The citation checker: answer sentences against the sources they cite.

    from pipeline.check import CitationChecker, apply_policy

    checker = CitationChecker(settings, embedder=embedder)
    checked = checker.check(answer, sources)          # CheckedAnswer: a Verdict per sentence
    shown, refused = apply_policy(checked, answer, "annotate")

Modules, one concept each, lowest first: `numbers` (quantities normalized), `citations`
([n] markers, answer sentences, spans), `evidence` (which source sentences count),
`predicates` (case roles, negation, modality), `analysis` (what one text says),
`features` (a claim against its sources), `semantic` (the semantic stage's seam),
`model` (the fitted combination, weights in ``fitted.json``), `verdicts` (the results),
`checker` (`CitationChecker`), `policy` (what the user sees).
The LLM judge's prompt lives above, in `pipeline.answer.judge`.
"""

from pipeline.check.checker import CitationChecker, Judge
from pipeline.check.policy import REFUSAL, Policy, apply_policy
from pipeline.check.verdicts import CheckedAnswer, Label, Verdict

__all__ = ["CheckedAnswer", "CitationChecker", "Judge", "Label", "Policy", "REFUSAL", "Verdict", "apply_policy"]
