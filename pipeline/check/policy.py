"""The citation policy: what the user sees of a checked answer.

* annotate: unsupported sentences get 〔資料で未確認〕, uncited ones 〔出典なし〕 (or the
  citation of the source that supports them); wrong citations are replaced by the right one.
* strip: unsupported and unfixable uncited sentences are removed; citations fixed as above.
* refuse: `REFUSAL` when less than `refuse_below` of the sentences are supported;
  otherwise as annotate.
"""

from __future__ import annotations

import re
from typing import Literal, Sequence

from pipeline.check.citations import CITATION_MARKER
from pipeline.check.verdicts import CheckedAnswer

__all__ = ["DEFAULT_REFUSE_BELOW", "MARK_UNCITED", "MARK_UNSUPPORTED", "POLICIES", "Policy", "REFUSAL", "apply_policy"]

Policy = Literal["annotate", "strip", "refuse"]
POLICIES: tuple[Policy, ...] = ("annotate", "strip", "refuse")

REFUSAL = "資料では裏付けられません。"
MARK_UNSUPPORTED = "〔資料で未確認〕"
MARK_UNCITED = "〔出典なし〕"
DEFAULT_REFUSE_BELOW = 0.5


def _with_citations(text: str, numbers: Sequence[int]) -> str:
    """`text` with its markers replaced by ``[n]`` for `numbers` (placed before the full stop)."""
    bare = CITATION_MARKER.sub("", text).rstrip()
    marks = "".join(f"[{n}]" for n in numbers)
    m = re.search(r"[。．.!?！？]+$", bare)
    if m:
        return bare[: m.start()] + marks + bare[m.start():]
    return bare + marks


def apply_policy(checked: CheckedAnswer, answer: str, policy: Policy = "annotate",
                 refuse_below: float = DEFAULT_REFUSE_BELOW) -> tuple[str, bool]:
    """The answer as shown, and whether it was refused (see the module docstring)."""
    if policy not in POLICIES:
        from pipeline.errors import ConfigError

        raise ConfigError(f"citation_policy は annotate / strip / refuse のどれかです: {policy!r}")
    if policy == "refuse" and checked.verdicts and checked.supported_fraction < refuse_below:
        return REFUSAL, True
    pieces: list[str] = []
    pos = 0
    for v in sorted(checked.verdicts, key=lambda v: v.sentence.start):
        s = v.sentence
        pieces.append(answer[pos:s.start])
        pos = s.end
        text = s.text
        if v.label == "supported":
            pieces.append(text)
        elif v.label == "supported_by_other" or (v.label == "uncited" and v.fixed_citations):
            pieces.append(_with_citations(text, v.fixed_citations))
        elif policy == "strip":
            continue
        else:
            mark = MARK_UNCITED if v.label == "uncited" else MARK_UNSUPPORTED
            pieces.append(text + mark)
    pieces.append(answer[pos:])
    out = "".join(pieces)
    if policy == "strip":
        out = re.sub(r"\n{3,}", "\n\n", out).strip()
    return out, False
