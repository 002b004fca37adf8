"""Build RAG-style claim sets for the citation checker from JSQuAD (CC BY-SA 4.0).

Two sets, written as ``pairs.jsonl`` (premise, hypothesis, label, pair_id, meta) so that
``rag eval citations DIR`` runs on them:

* ``claims_jsquad``: a question turned into a statement with its answer
  (「ラオスの有名な川は？」+「メコン川」 -> 「ラオスの有名な川はメコン川である。」), checked against
  - its gold paragraph (entailment),
  - the gold paragraph, with the answer replaced by another question's answer taken
    from the same paragraph (``wrong_answer``: the words are all there, the fact is not),
  - the gold paragraph, with a number of the claim changed (``number``: 1445年 -> 1455年),
  - the gold paragraph, with the answer replaced by an answer from another article (``entity``),
  - a sibling paragraph of the same article that does not contain the answer (``sibling``).
* ``claims_roles``: a sentence of a paragraph against itself with two case-marked
  arguments of one predicate swapped in place (「AがBを…」 -> 「AをBが…」: the same meaning,
  entailment) or with the nouns swapped between the cases (「BがAを…」: contradiction).
  Same words, other order or role: lexical checkers are at chance here.

Deterministic (seeded), stdlib + MeCab only::

    python -m pipeline.evaluation.claims ../shared/evaldata/jsquad_v1.3_valid benchmarks/data
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from pathlib import Path

__all__ = ["build_claim_pairs", "build_role_pairs", "question_to_claim", "write_sets"]

ATTRIBUTION = """# {name}: derived from JSQuAD v1.3 (JGLUE)

Pairs for `rag eval citations` built by `pipeline/evaluation/claims.py` from
`shared/evaldata/jsquad_v1.3_valid` (JSQuAD v1.3 valid, JGLUE).

License: **CC BY-SA 4.0**, like its source (https://creativecommons.org/licenses/by-sa/4.0/).
Attribution: Kurihara, Kawahara, Shibata. "JGLUE: Japanese General Language Understanding
Evaluation", LREC 2022 (Yahoo Japan Corp. and Waseda University Kawahara Lab).
Underlying text: Japanese Wikipedia (dump of 2021-11-01), CC BY-SA.
Upstream: https://github.com/yahoojapan/JGLUE (commit 6f071c09316baae89c3d083a90985b4b1cb9968c),
`datasets/jsquad-v1.3/valid-v1.3.json`.

Changes: paragraphs are verbatim; hypotheses are questions rewritten as statements with
their answer, or with a wrong answer / changed number / other entity (claims_jsquad), or
a paragraph sentence with two arguments reordered or their roles swapped (claims_roles).
Labels are ours: entailment = supported, contradiction / neutral = not supported.

Regenerate: `{command}`
"""

_WH = [
    "どのくらいの", "どれくらいの", "どのぐらい", "どのくらい", "どれくらい", "どれぐらい", "どのような", "どういう",
    "どんな", "どの", "どこ", "どれ", "いつ", "誰", "だれ", "いくつ", "いくら", "なんと", "何と", "なに", "なん",
]
_WH_NAN = re.compile(r"何(?:[ぁ-ゖ]|[^\sぁ-ゖ]{0,2})")
_TRAIL = re.compile(r"(?:ですか|でしょうか|でしたか|のか|か)?[？?。\s]*$")


def question_to_claim(question: str, answer: str) -> str | None:
    """A declarative sentence stating `answer` as the answer of `question`, or None."""
    q = question.strip()
    core = _TRAIL.sub("", q)
    if not core or answer in core:
        return None
    # 何位 / 何年 / 何cm: replace the wh-word with its counter by the answer.
    for m in _WH_NAN.finditer(core):
        tail = m.group(0)[1:]
        if tail and not re.match(r"[ぁ-ゖ]", tail) and answer.endswith(tail):
            return _finish(core[: m.start()] + answer + core[m.end():], at_end=m.end() == len(core))
    for wh in _WH:
        k = core.find(wh)
        if k >= 0:
            rep = answer + ("と" if wh in ("なんと", "何と") else "")
            return _finish(core[:k] + rep + core[k + len(wh):], at_end=k + len(wh) == len(core))
    k = core.find("何")
    if k >= 0:
        end = k + 1
        return _finish(core[:k] + answer + core[end:], at_end=end == len(core))
    if core.endswith(("は", "とは")):
        return _finish(core + answer, at_end=True)
    return None


def _finish(text: str, at_end: bool) -> str:
    text = text.rstrip("、, ")
    if at_end:
        return text + "である。"
    return text + "。"


_NUM = re.compile(r"\d+")


def _swap_number(text: str, rng: random.Random) -> str | None:
    nums = list(_NUM.finditer(text))
    if not nums:
        return None
    m = rng.choice(nums)
    v = int(m.group(0))
    delta = rng.choice([1, 2, 3, 5, 10]) if v < 1000 else rng.choice([1, 2, 5, 10, 20])
    new = v + delta if rng.random() < 0.6 or v - delta < 0 else v - delta
    return text[: m.start()] + str(new) + text[m.end():]


def _load(folder: Path) -> tuple[dict, list]:
    corpus = {}
    for line in (folder / "corpus.jsonl").open(encoding="utf-8"):
        d = json.loads(line)
        corpus[d["doc_id"]] = d
    queries = [json.loads(line) for line in (folder / "queries.jsonl").open(encoding="utf-8")]
    return corpus, queries


def _article(doc_id: str) -> str:
    return doc_id.rsplit("p", 1)[0]


def _same_type(answer: str, candidates: list[str]) -> list[str]:
    """Candidates of the same kind as `answer` (same last character, else same digit-ness)."""
    same = [c for c in candidates if c[-1:] == answer[-1:]]
    if same:
        return same
    digit = bool(re.search(r"\d", answer))
    return [c for c in candidates if bool(re.search(r"\d", c)) == digit]


def build_claim_pairs(folder: Path, n_questions: int = 250, seed: int = 13) -> list[dict]:
    """The claims_jsquad pairs (see module docstring)."""
    corpus, queries = _load(folder)
    rng = random.Random(seed)
    by_doc: dict[str, list[dict]] = {}
    for q in queries:
        by_doc.setdefault(q["gold_doc_ids"][0], []).append(q)
    by_article: dict[str, list[str]] = {}
    for doc_id in corpus:
        by_article.setdefault(_article(doc_id), []).append(doc_id)
    all_answers = [(q["meta"]["article_id"], min(q["answers"], key=len)) for q in queries]
    order = list(queries)
    rng.shuffle(order)
    pairs: list[dict] = []
    used = 0
    for q in order:
        if used >= n_questions:
            break
        doc = corpus[q["gold_doc_ids"][0]]
        answer = min(q["answers"], key=len)
        if answer not in doc["text"]:
            continue
        claim = question_to_claim(q["question"], answer)
        if claim is None:
            continue
        used += 1
        article = q["meta"]["article_id"]
        base = {"qid": q["qid"], "group": article, "question": q["question"], "answer": answer}

        def add(premise: str, hyp: str, label: str, kind: str, **extra) -> None:
            pairs.append({
                "premise": premise,
                "hypothesis": hyp,
                "label": label,
                "pair_id": f"claims:{q['qid']}:{kind}",
                "meta": {**base, "kind": kind, **extra},
            })

        add(doc["text"], claim, "entailment", "right")
        # wrong answer from the same paragraph
        others = [
            min(o["answers"], key=len) for o in by_doc[doc["doc_id"]]
            if o["qid"] != q["qid"] and all(a not in o_a and o_a not in a for a in q["answers"] for o_a in o["answers"])
        ]
        others = _same_type(answer, [o for o in others if o in doc["text"]])
        if others:
            wrong = rng.choice(others)
            hyp = question_to_claim(q["question"], wrong)
            if hyp:
                add(doc["text"], hyp, "contradiction", "wrong_answer", wrong=wrong)
        swapped = _swap_number(claim, rng)
        if swapped and swapped != claim:
            add(doc["text"], swapped, "contradiction", "number")
        cands = _same_type(answer, [a for art, a in all_answers if art != article and a not in doc["text"]])
        if cands:
            ent = rng.choice(cands)
            hyp = question_to_claim(q["question"], ent)
            if hyp:
                add(doc["text"], hyp, "contradiction", "entity", wrong=ent)
        sibs = [
            d for d in by_article[_article(doc["doc_id"])]
            if d != doc["doc_id"] and not any(a in corpus[d]["text"] for a in q["answers"])
        ]
        if sibs:
            sib = rng.choice(sibs)
            add(corpus[sib]["text"], claim, "neutral", "sibling", premise_doc=sib)
    return pairs


def build_role_pairs(folder: Path, n_sentences: int = 300, seed: int = 17) -> list[dict]:
    """The claims_roles pairs: argument order scrambled (entailment) or roles swapped (contradiction)."""
    from pipeline.japanese import default_analyzer, split_sentences

    an = default_analyzer()
    corpus, _ = _load(folder)
    rng = random.Random(seed)
    docs = sorted(corpus.values(), key=lambda d: d["doc_id"])
    rng.shuffle(docs)
    pairs: list[dict] = []
    for doc in docs:
        if len(pairs) >= 2 * n_sentences:
            break
        text = doc["text"]
        for s, e in split_sentences(text):
            sent = text[s:e]
            if not 15 <= len(sent) <= 90:
                continue
            found = _adjacent_arguments(sent, an)
            if not found:
                continue
            (a0, a1, p1), (b0, b1, p2) = found
            np1, np2 = sent[a0:a1], sent[b0:b1]
            if np1 == np2 or np1 in np2 or np2 in np1:
                continue
            part1, part2 = sent[a0:p1], sent[b0:p2]  # noun + particle
            between = sent[p1:b0]
            scrambled = sent[:a0] + part2 + between + part1 + sent[p2:]
            swapped = sent[:a0] + np2 + sent[a1:p1] + between + np1 + sent[b1:p2] + sent[p2:]
            base = {"group": _article(doc["doc_id"]), "doc_id": doc["doc_id"], "args": [part1, part2]}
            pid = hashlib.sha1(sent.encode()).hexdigest()[:10]
            pairs.append({"premise": sent, "hypothesis": scrambled, "label": "entailment",
                          "pair_id": f"roles:{pid}:order", "meta": {**base, "kind": "order"}})
            pairs.append({"premise": sent, "hypothesis": swapped, "label": "contradiction",
                          "pair_id": f"roles:{pid}:swap", "meta": {**base, "kind": "swap"}})
            if sum(p["meta"]["doc_id"] == doc["doc_id"] for p in pairs) >= 4:
                break  # at most two sentences per paragraph
    return pairs


_ARG_CASES = {"が", "を", "に"}
# Nouns that with に make adverbs or compound particles (一気に, ともに, 際に, 前に).
_ADVERBIAL_NOUNS = {"一気", "共", "とも", "供", "時", "際", "為", "中", "間", "上", "下", "前", "後", "基", "元", "最初",
                    "最後", "初め", "次", "他", "外", "以外", "以上", "以下", "程", "毎", "ごと", "様", "風", "的"}
# Verbs that with に/を form compound particles (において, に比べて, に対して): not predicates.
_PARTICLE_VERBS = {"置く", "於く", "対する", "関する", "比べる", "基づく", "因る", "依る", "由る", "通じる", "伴う",
                   "限る", "向ける", "際する", "沿う", "応じる", "渡る", "亘る", "巡る", "除く", "含める", "始める"}


def _adjacent_arguments(sent: str, an) -> tuple | None:
    """Two adjacent case-marked noun phrases of one predicate: ((s, e, after_particle), ...)."""
    ms = an.morphemes(sent)
    phrases = []  # (np_start, np_end, particle_end, particle, index of particle)
    i = 0
    while i < len(ms):
        if ms[i].pos1 == "名詞" and ms[i].pos2 != "数詞":
            j = i
            while j < len(ms) and ms[j].pos1 in ("名詞", "接尾辞") :
                j += 1
            if j < len(ms) and ms[j].pos1 == "助詞" and (
                ms[j].pos2 == "格助詞" and ms[j].surface in _ARG_CASES
            ) and not (j + 1 < len(ms) and ms[j + 1].pos1 == "助詞"):
                # the noun phrase must start the clause: not after の or a modifier
                if ms[j - 1].lemma in _ADVERBIAL_NOUNS:
                    i = j + 1
                    continue
                prev = ms[i - 1] if i else None
                if prev is None or prev.pos1 in ("補助記号", "助詞") and prev.surface not in ("の",):
                    phrases.append((ms[i].start, ms[j - 1].end, ms[j].end, ms[j].surface, j))
            i = j + 1 if j > i else i + 1
            continue
        i += 1
    for (a0, a1, p1, c1, j1), (b0, b1, p2, c2, j2) in zip(phrases, phrases[1:]):
        if p1 != b0 or c1 == c2:
            continue
        # a verb must follow right after the second argument (possibly after adverbs)
        k = j2 + 1
        while k < len(ms) and ms[k].pos1 == "副詞":
            k += 1
        if k < len(ms) and ms[k].pos1 == "動詞" and ms[k].pos2 == "一般" and ms[k].lemma not in _PARTICLE_VERBS:
            return (a0, a1, p1), (b0, b1, p2)
    return None


def write_sets(jsquad: Path, out: Path) -> dict[str, int]:
    """Write both sets with their attribution; returns the pair count per set."""
    command = "python -m pipeline.evaluation.claims ../shared/evaldata/jsquad_v1.3_valid benchmarks/data"
    counts = {}
    for name, pairs in (("claims_jsquad", build_claim_pairs(jsquad)), ("claims_roles", build_role_pairs(jsquad))):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        with (d / "pairs.jsonl").open("w", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        (d / "SOURCE.md").write_text(ATTRIBUTION.format(name=name, command=command), encoding="utf-8")
        counts[name] = len(pairs)
    return counts


if __name__ == "__main__":  # pragma: no cover - a data build step
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/evaldata/jsquad_v1.3_valid")
    dst = Path(sys.argv[2] if len(sys.argv) > 2 else "benchmarks/data")
    print(write_sets(src, dst))
