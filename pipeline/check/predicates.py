"""Japanese predicate–argument structure from MeCab morphemes: who did what to whom.

`read_predicates` turns a morpheme sequence into

* (argument, case, predicate) triples with が/を/に/で/と/へ/から/より, は read as a
  subject (a topic beside a が subject as any role); the passive れる/られる turned active
  (花子が太郎に叩かれた = 太郎が花子を叩いた); a noun + する is its own predicate (保存する);
* each predicate's polarity: negated (ない/ず/ぬ/ません, parity kept, so 行かなければ
  ならない is positive) and hedged (だろう, かもしれない, らしい, はず, そうだ, ようだ, 可能性);
* the noun phrases as written, and the focus of copula predicates (「XはYである」's Y).

`roles_agree` / `roles_conflict` say whether two case marks on the same argument and
predicate say the same thing: 「太郎が花子を」 does not support 「花子が太郎を」.

    >>> from pipeline.japanese import default_analyzer
    >>> p = read_predicates(default_analyzer().morphemes("花子が太郎に叩かれなかった。"))
    >>> sorted(p.triples), p.polarity
    ([('太郎', 'に*', '叩く'), ('花子', 'を*', '叩く')], {'叩く': {(True, False)}})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from pipeline.japanese import Morpheme

__all__ = ["ANY_PREDICATE", "Predicates", "read_predicates", "roles_agree", "roles_conflict", "word_of"]

_CASE = {"が", "を", "に", "で", "と", "へ", "から", "より"}
_HEDGE_SURFACES = {"だろう", "でしょう", "だろ", "でしょ", "かしら"}
_HEDGE_LEMMAS = {"らしい", "筈", "可能", "知れる", "思う", "恐れ", "推測", "予想", "見込み"}
_NEG_AUX = {"ない", "ず", "ぬ", "ん"}
_PRED_TAIL_OK = {"居る", "仕舞う", "有る", "無い", "知れる", "思う", "下さる", "置く", "見る", "来る", "行く", "成る", "為る"}

_SUBJECT = {"が", "は"}
# Case pairs that contradict each other on the same argument and predicate. "を*" is the
# subject of a passive (the active's object, or its recipient: 判決を言い渡された), "に*"
# a passive's に (the active's subject, or a place), "は*" a topic beside a が subject
# (学説はアリストテレスが唱えた: any role, so it conflicts with none).
_ROLE_CONFLICTS = {
    ("が", "を"), ("を", "が"), ("は", "を"), ("を", "は"), ("が", "に"), ("に", "が"),
    ("を", "に"), ("に", "を"), ("を", "に*"), ("に*", "を"),
    ("を*", "が"), ("が", "を*"), ("を*", "は"), ("は", "を*"), ("を*", "に*"), ("に*", "を*"),
}
# A bare する (「Yとする」, 「しなかった」) stands for whatever predicate the context gives it:
# its roles and negation compared across texts say nothing (9 of 15 correct held-out claims with
# a hard conflict were flagged through it). する after its noun is that noun's (保存為る).
ANY_PREDICATE = frozenset({"為る"})
# Verbs that end a compound case particle after に/を/と (により, について, に対して, に関する,
# において, を通じて, として): not predicates of the arguments before them.
_PARTICLE_VERBS = {"因る", "就く", "対する", "関する", "於く", "通じる", "通ずる", "依る", "基づく"}


@dataclass(frozen=True)
class Predicates:
    """What the predicates of a text say, as sets that can be compared."""

    triples: set[tuple[str, str, str]] = field(default_factory=set)  # (argument, case, predicate)
    polarity: dict[str, set[tuple[bool, bool]]] = field(default_factory=dict)  # pred -> {(negated, hedged)}
    phrases: list[str] = field(default_factory=list)  # noun phrases (compounds), as written
    focus: list[str] = field(default_factory=list)  # noun phrases of copula predicates: 「XはYである」's Y


def word_of(m: "Morpheme") -> str:
    """The comparable form of a morpheme: proper nouns as written, other words by lemma."""
    return (m.surface if m.pos2 == "固有名詞" else m.lemma).lower()


def read_predicates(ms: Sequence["Morpheme"]) -> Predicates:
    """Triples, polarity, noun phrases and copula focus of a morpheme sequence."""
    out = Predicates()
    pending: list[tuple[str, str]] = []  # (argument, case) waiting for their predicate
    np_parts: list[str] = []
    n = len(ms)
    i = 0
    while i < n:
        m = ms[i]
        if m.pos1 in ("名詞", "接頭辞") or (m.pos1 == "接尾辞" and np_parts):
            # Noun phrase, or a copula predicate (学生だ / 学生です).
            if m.pos1 == "名詞" and _next_is_copula(ms, i):
                head = word_of(m)
                out.focus.append("".join(x.surface for x in ms[i - len(np_parts):i + 1]).lower())
                out.phrases.append(out.focus[-1])
                _close_predicate(ms, i, head, pending, out)
                pending, np_parts = [], []
                i += 1
                continue
            np_parts.append(word_of(m) if m.pos1 == "名詞" else m.surface.lower())
            i += 1
            continue
        if np_parts:
            out.phrases.append("".join(x.surface for x in ms[i - len(np_parts):i]).lower())
        if m.pos1 == "助詞" and np_parts:
            arg = "".join(np_parts)
            case = m.surface
            if m.pos2 == "格助詞" and case in _CASE:
                if case == "と" and i + 1 < n and ms[i + 1].pos1 == "動詞" and ms[i + 1].lemma in ("言う", "思う", "答える"):
                    pass  # quotation と
                else:
                    pending.append((arg, case))
            elif m.pos2 == "係助詞" and case == "は":
                pending.append((arg, "は"))
            np_parts = []
            i += 1
            continue
        if _ends_compound_particle(ms, i):
            if pending:
                pending.pop()  # 〜により / 〜について: that argument is not a case of the predicate
            np_parts = []
            i += 1
            continue
        # 保存する, 発見される, 自動化する: the noun before する is the predicate (bare する is any).
        light_noun = _light_verb_noun(ms, i, np_parts) if m.lemma == "為る" else ""
        np_parts = []
        is_pred = m.pos1 in ("動詞", "形容詞", "形状詞") and m.pos2 != "非自立可能" and m.pos2 != "助動詞語幹"
        if m.lemma == "知れる" and i > 0 and ms[i - 1].surface == "も":
            is_pred = False  # かもしれない: modality of the predicate before
        if _adverbial(ms, i):
            is_pred = False  # 影響を強く受けた: the arguments are the verb's
        if m.pos1 == "動詞" and m.pos2 == "非自立可能" and not _after_te(ms, i):
            is_pred = (m.lemma not in ("為る",) or bool(pending)) and not _modal_naru(ms, i)
        if is_pred:
            _close_predicate(ms, i, light_noun + m.lemma.lower(), pending, out)
            pending = []
        elif m.pos1 == "補助記号" and m.pos2 in ("句点", "読点") and m.surface != "、":
            pending = []
        i += 1
    return out


def _light_verb_noun(ms: Sequence["Morpheme"], i: int, np_parts: list[str]) -> str:
    if not np_parts or ms[i - 1].pos1 not in ("名詞", "接尾辞"):
        return ""
    if ms[i - 1].pos1 == "接尾辞":  # 自動化する: the stem and its suffix
        return "".join(np_parts[-2:])
    return np_parts[-1]


def _adverbial(ms: Sequence["Morpheme"], i: int) -> bool:
    """An adjective in its く form right before a content verb (強く受ける) modifies that verb."""
    m = ms[i]
    if m.pos1 != "形容詞" or m.lemma == "無い" or not m.surface.endswith("く") or i + 1 >= len(ms):
        return False
    return ms[i + 1].pos1 == "動詞" and ms[i + 1].pos2 != "非自立可能"


def _ends_compound_particle(ms: Sequence["Morpheme"], i: int) -> bool:
    m = ms[i]
    if m.pos1 != "動詞" or i == 0 or ms[i - 1].pos1 != "助詞" or ms[i - 1].surface not in ("に", "を", "と"):
        return False
    if m.lemma == "為る":  # として
        return ms[i - 1].surface == "と" and i + 1 < len(ms) and ms[i + 1].surface == "て"
    return m.lemma in _PARTICLE_VERBS


def _next_is_copula(ms: Sequence["Morpheme"], i: int) -> bool:
    if i + 1 >= len(ms):
        return False
    nxt = ms[i + 1]
    if nxt.pos1 != "助動詞" or nxt.lemma not in ("だ", "です"):
        return False
    # 静かな部屋 (attributive な) is not a predicate
    return nxt.surface not in ("な", "の")


def _modal_naru(ms: Sequence["Morpheme"], i: int) -> bool:
    """なければならない / てはならない: the なる belongs to the predicate before (its tail)."""
    if ms[i].lemma != "成る" or i == 0:
        return False
    before = ms[i - 1].surface
    return before == "ば" or (before == "は" and i > 1 and ms[i - 2].surface in ("て", "で"))


def _after_te(ms: Sequence["Morpheme"], i: int) -> bool:
    return i > 0 and ms[i - 1].pos1 == "助詞" and ms[i - 1].surface in ("て", "で")


def _close_predicate(ms: Sequence["Morpheme"], i: int, pred: str, pending: list[tuple[str, str]],
                     out: Predicates) -> None:
    """Read the predicate at `i`'s tail (negation, passive, hedges) and give it its arguments."""
    negs = 0
    hedged = False
    passive = False
    for k in range(i + 1, min(len(ms), i + 9)):
        t = ms[k]
        if t.pos1 == "補助記号":
            break
        if t.pos1 == "助動詞":
            if t.lemma in _NEG_AUX and not hedged:  # かもしれない is not a negation
                negs += 1
            elif t.lemma in ("れる", "られる") and k == i + 1:
                passive = True
            if t.surface in _HEDGE_SURFACES or t.lemma == "らしい":
                hedged = True
            continue
        if t.pos2 == "助動詞語幹" and t.lemma in ("そう", "様", "みたい"):
            hedged = True
            continue
        if t.pos1 == "形容詞" and t.lemma == "無い" and k > i:
            negs += 1
            continue
        if t.pos1 == "助詞":
            if t.pos2 == "格助詞" and t.surface not in ("と",):
                # 可能性が / かも: keep looking only for hedges right after
                if not (k + 1 < len(ms) and ms[k + 1].lemma in _HEDGE_LEMMAS):
                    break
            continue
        if t.lemma in _HEDGE_LEMMAS:
            hedged = True
            continue
        if t.pos1 in ("動詞", "形容詞") and t.lemma in _PRED_TAIL_OK:
            continue
        if t.pos1 == "接尾辞":
            continue
        break
    has_subject = any(case == "が" for _, case in pending)
    adjective = ms[i].pos1 == "形容詞"
    for arg, case in pending:
        if case == "は" and has_subject:
            case = "は*"  # 学説はアリストテレスが唱えた: the topic is not the subject
        if adjective and case == "に":
            case = "に*"  # 資料に乏しい = 資料が乏しい
        if passive:
            # 花子が太郎に叩かれた = 太郎が花子を叩いた (判決を言い渡された: the recipient, に);
            # passive に may also be a place.
            case = {"が": "を*", "は": "を*", "に": "に*"}.get(case, case)
        out.triples.add((arg, case, pred))
    out.polarity.setdefault(pred, set()).add((negs % 2 == 1, hedged))


def roles_agree(case: str, cases: set[str]) -> bool:
    """Does `case` say the same as one of `cases` (same argument, same predicate)?"""
    if case in cases:
        return True
    if case in _SUBJECT and cases & _SUBJECT:
        return True
    if case == "に*":
        return bool(cases & {"が", "は", "に"})
    if case == "を*":
        return bool(cases & {"を", "に"})
    return (case in ("が", "は", "に") and "に*" in cases) or (case in ("を", "に") and "を*" in cases)


def roles_conflict(case: str, cases: set[str]) -> bool:
    """Does `case` contradict one of `cases`: 「太郎が」 where the premise has 「太郎を」?"""
    return any((case, pc) in _ROLE_CONFLICTS for pc in cases)
