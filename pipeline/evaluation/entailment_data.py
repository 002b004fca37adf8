"""Training and evaluation pairs for the entailment model (`pipeline.check.entailment`).

A pair is (premise = the cited span, hypothesis = a claim sentence, label 1 entailed / 0 not):

* NLI, for training only: JNLI v1.3 *test* and JSICK *train* (`shared/traindata`); label
  entailment → 1, neutral and contradiction → 0. JNLI *valid* (`shared/evaldata`) is for
  evaluation only (`jnli_valid`).
* RAG-style claims from the QA dev sets (JSQuAD v1.3 valid, JaQuAD dev, JEMHopQA v1.2): a
  question rewritten as a statement with its answer (`claims.question_to_claim`) against
  the window of its gold paragraph that matches it best (the title line carried with it
  half of the time, always when the answer is only in the title), and the same window
  against the claim with another answer from the same paragraph (``wrong_answer``), a
  changed number (``number``), an answer from another article (``entity``), the claim
  negated (``negated``); the claim against a sibling paragraph of the same article that
  lacks the answer (``sibling``); for JEMHopQA's two-hop questions, against the first hop's
  card alone (``partial``).
* Word order / case roles from JSQuAD and JaQuAD sentences (`claims.build_role_pairs`): two arguments
  reordered (entailed) or their roles swapped (not).

Claims and role pairs are split BY ARTICLE (JEMHopQA: by groups of questions that share a
fact card) with a seeded hash (`split_of`): ``heldout`` articles are never trained on and are
what gets reported, ``val`` articles choose the checkpoint and the threshold, ``train``
articles train. NLI pairs split into train / val by their caption group (JNLI) or pair.

    python -m pipeline.evaluation.entailment_data                 # counts per split
    python -m pipeline.evaluation.entailment_data --write-heldout benchmarks/data/claims_heldout
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from pipeline.check.entailment.inputs import premise_window, with_title
from pipeline.evaluation.claims import _same_type, _swap_number, build_role_pairs, question_to_claim

__all__ = [
    "DataConfig",
    "Example",
    "Splits",
    "build_splits",
    "card_roots",
    "jemhop_claims",
    "jnli_valid",
    "nli_examples",
    "qa_claims",
    "role_examples",
    "split_of",
    "summary",
    "write_pairs",
]

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LABELS = {"entailment": 1, "neutral": 0, "contradiction": 0}
QA_SETS = ("jsquad_v1.3_valid", "jaquad_dev")
JEMHOP = "jemhopqa_v1.2"
NLI_TRAIN = ("jnli_v1.3_test", "jsick_train")


@dataclass(frozen=True)
class Example:
    premise: str
    hypothesis: str
    label: int  # 1 = the premise entails the hypothesis
    source: str  # jnli, jsick, jsquad, jaquad, jemhopqa, roles
    kind: str  # the NLI label, or how the claim was made (right, wrong_answer, …)
    group: str  # the article (claims) or pair group (NLI): what splits go by
    pair_id: str

    def to_pair(self) -> dict:
        """The `pairs.jsonl` form `rag eval citations` reads."""
        label = "entailment" if self.label else ("neutral" if self.kind in ("sibling", "partial", "neutral")
                                                  else "contradiction")
        return {"premise": self.premise, "hypothesis": self.hypothesis, "label": label,
                "pair_id": self.pair_id, "meta": {"source": self.source, "kind": self.kind, "group": self.group}}


@dataclass(frozen=True)
class DataConfig:
    traindata: Path = SHARED / "traindata"
    evaldata: Path = SHARED / "evaldata"
    seed: int = 13
    premise_chars: int = 160
    heldout: float = 0.2  # share of articles never trained on (reported)
    val: float = 0.1  # share of articles for checkpoint and threshold choice
    title_rate: float = 0.5  # claims whose premise carries the title line
    roles: bool = True  # word-order / case-role pairs (needs MeCab)


@dataclass(frozen=True)
class Splits:
    train: list[Example] = field(default_factory=list)
    val: list[Example] = field(default_factory=list)
    heldout: list[Example] = field(default_factory=list)


def split_of(group: str, seed: int, heldout: float, val: float) -> str:
    """'heldout', 'val' or 'train' for a group (article), stable for a seed."""
    u = int.from_bytes(hashlib.sha1(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
    return "heldout" if u < heldout else "val" if u < heldout + val else "train"


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def nli_examples(folder: Path, source: str, premise_chars: int = 160) -> list[Example]:
    """An NLI folder's pairs.jsonl: entailment → 1, neutral / contradiction → 0."""
    out = []
    for p in _jsonl(Path(folder) / "pairs.jsonl"):
        label = str(p["label"]).strip().lower()
        if label not in LABELS:
            raise ValueError(f"{folder}: unknown label {p['label']!r} in {p.get('pair_id')}")
        meta = p.get("meta") or {}
        group = meta.get("yjcaptions_id") or meta.get("group") or p["pair_id"]
        out.append(Example(premise_window(p["premise"], p["hypothesis"], premise_chars), p["hypothesis"],
                           LABELS[label], source, label, f"{source}:{group}", str(p["pair_id"])))
    return out


def jnli_valid(cfg: DataConfig = DataConfig()) -> list[Example]:
    """JNLI v1.3 valid: evaluation only."""
    return nli_examples(cfg.evaldata / "jnli_v1.3_valid", "jnli_valid", cfg.premise_chars)


def _negated(claim: str) -> str | None:
    return claim[: -len("である。")] + "ではない。" if claim.endswith("である。") else None


def _paragraph_article(queries: Sequence[dict]) -> dict[str, str]:
    return {q["gold_doc_ids"][0]: q["meta"]["article_id"] for q in queries}


def _add_altered_claims(add, premise: str, claim: str, question: str, answer: str,
                        other_answers: list[str], rng: random.Random) -> None:
    """The claim with a number changed, with an answer of the same type from elsewhere, and
    negated: each not entailed by `premise` (in this order: the rng draws stay the same)."""
    number = _swap_number(claim, rng)
    if number and number != claim:
        add(premise, number, 0, "number")
    cands = _same_type(answer, other_answers)
    if cands:
        hyp = question_to_claim(question, rng.choice(cands))
        if hyp:
            add(premise, hyp, 0, "entity")
    neg = _negated(claim)
    if neg:
        add(premise, neg, 0, "negated")


def qa_claims(folder: Path, source: str, cfg: DataConfig) -> list[Example]:
    """Claims from a paragraph-level QA set (JSQuAD, JaQuAD): see the module docstring."""
    corpus = {d["doc_id"]: d for d in _jsonl(Path(folder) / "corpus.jsonl")}
    queries = _jsonl(Path(folder) / "queries.jsonl")
    rng = random.Random(f"{cfg.seed}:{source}")
    article_of = _paragraph_article(queries)
    by_doc: dict[str, list[dict]] = {}
    for q in queries:
        by_doc.setdefault(q["gold_doc_ids"][0], []).append(q)
    by_article: dict[str, list[str]] = {}
    for doc_id, art in sorted(article_of.items()):
        by_article.setdefault(art, []).append(doc_id)
    answers = [(q["meta"]["article_id"], min(q["answers"], key=len)) for q in queries]
    out: list[Example] = []
    for q in queries:
        doc = corpus[q["gold_doc_ids"][0]]
        article = q["meta"]["article_id"]
        answer = min(q["answers"], key=len)
        claim = question_to_claim(q["question"], answer)
        if claim is None:
            continue
        title, text = doc.get("title") or "", doc["text"]
        window = premise_window(text, claim, cfg.premise_chars)
        if answer in window:
            premise = with_title(title, window) if rng.random() < cfg.title_rate else window
        elif answer in title:
            premise = with_title(title, window)
        else:
            continue  # the best-matching window misses the answer: no clean positive
        group = article  # "jsquad:a10336": the same ids as the role pairs and claims_jsquad

        def add(prem: str, hyp: str, label: int, kind: str) -> None:
            out.append(Example(prem, hyp, label, source, kind, group, f"{source}:{q['qid']}:{kind}"))

        add(premise, claim, 1, "right")
        others = [
            min(o["answers"], key=len) for o in by_doc[doc["doc_id"]]
            if o["qid"] != q["qid"] and all(a not in b and b not in a for a in q["answers"] for b in o["answers"])
        ]
        others = _same_type(answer, [o for o in others if o in premise])
        if others:
            hyp = question_to_claim(q["question"], rng.choice(sorted(others)))
            if hyp:
                add(premise, hyp, 0, "wrong_answer")
        _add_altered_claims(add, premise, claim, q["question"], answer,
                            [a for art, a in answers if art != article and a not in text and a not in title], rng)
        sibs = [d for d in by_article[article]
                if d != doc["doc_id"] and not any(a in corpus[d]["text"] for a in q["answers"])]
        if sibs:
            sib = corpus[rng.choice(sibs)]
            sib_premise = premise_window(sib["text"], claim, cfg.premise_chars)
            if premise.startswith(title + "\n"):
                sib_premise = with_title(title, sib_premise)
            add(sib_premise, claim, 0, "sibling")
    return out


def card_roots(cards: Iterable[Sequence[str]]) -> Callable[[str], str]:
    """`root(doc)` names the group of every document some question names together with `doc`
    (the union of each question's gold documents, in the order given)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids in cards:
        for d in ids[1:]:
            parent[root(d)] = root(ids[0])
    return root


def jemhop_claims(folder: Path, cfg: DataConfig) -> list[Example]:
    """Claims from JEMHopQA's two-hop (compositional) questions over its fact cards."""
    corpus = {d["doc_id"]: d for d in _jsonl(Path(folder) / "corpus.jsonl")}
    queries = [q for q in _jsonl(Path(folder) / "queries.jsonl") if q["meta"].get("type") == "compositional"]
    rng = random.Random(f"{cfg.seed}:jemhopqa")
    # questions sharing a card are one group: no card on both sides of a split
    root = card_roots(q["gold_doc_ids"] for q in queries)
    answers = [(root(q["gold_doc_ids"][0]), q["answers"][0]) for q in queries]
    out: list[Example] = []
    for q in queries:
        answer = q["answers"][0]
        cards = [corpus[d]["text"] for d in q["gold_doc_ids"]]
        premise = premise_window("\n".join(cards), q["question"] + answer, cfg.premise_chars)
        claim = question_to_claim(q["question"], answer)
        if claim is None or answer not in premise:
            continue
        group = f"jemhopqa:{root(q['gold_doc_ids'][0])}"

        def add(prem: str, hyp: str, label: int, kind: str) -> None:
            out.append(Example(prem, hyp, label, "jemhopqa", kind, group, f"{q['qid']}:{kind}"))

        add(premise, claim, 1, "right")
        values = [v for line in premise.splitlines() if ": " in line for v in line.split(": ", 1)[1].split("、")]
        others = _same_type(answer, [v for v in values if v and v not in answer and answer not in v])
        if others:
            hyp = question_to_claim(q["question"], rng.choice(sorted(set(others))))
            if hyp:
                add(premise, hyp, 0, "wrong_answer")
        _add_altered_claims(add, premise, claim, q["question"], answer,
                            [a for g, a in answers if f"jemhopqa:{g}" != group and a not in premise], rng)
        if len(cards) > 1 and answer not in cards[0]:
            add(premise_window(cards[0], claim, cfg.premise_chars), claim, 0, "partial")
    return out


def role_examples(folder: Path, cfg: DataConfig) -> list[Example]:
    """Word-order (entailed) and swapped-role (not) pairs from a QA set's paragraphs."""
    article_of = _paragraph_article(_jsonl(Path(folder) / "queries.jsonl"))
    out = []
    for p in build_role_pairs(folder, n_sentences=100_000, seed=cfg.seed):
        group = article_of.get(p["meta"]["doc_id"], p["meta"]["group"])
        out.append(Example(p["premise"], p["hypothesis"], LABELS[p["label"]], "roles", p["meta"]["kind"],
                           group, p["pair_id"]))
    return out


def build_splits(cfg: DataConfig = DataConfig()) -> Splits:
    """Every training source, split by article; see the module docstring."""
    splits = Splits()
    by_name = {"train": splits.train, "val": splits.val, "heldout": splits.heldout}
    for name in NLI_TRAIN:
        source = name.split("_")[0]
        for ex in nli_examples(cfg.traindata / name, source, cfg.premise_chars):
            # NLI data is never reported here (JNLI valid is): only train / val
            by_name["val" if split_of(ex.group, cfg.seed, 0.0, cfg.val) == "val" else "train"].append(ex)
    claims: list[Example] = []
    for name in QA_SETS:
        claims += qa_claims(cfg.evaldata / name, name.split("_")[0], cfg)
    claims += jemhop_claims(cfg.evaldata / JEMHOP, cfg)
    if cfg.roles:
        for name in QA_SETS:
            claims += role_examples(cfg.evaldata / name, cfg)
    for ex in claims:
        by_name[split_of(ex.group, cfg.seed, cfg.heldout, cfg.val)].append(ex)
    return splits


def summary(examples: Sequence[Example], lengths: Sequence[int] | None = None) -> dict:
    """Counts per source, kind and label; token totals when `lengths` are given."""
    d: dict = {
        "examples": len(examples),
        "entailed": sum(e.label for e in examples),
        "groups": len({e.group for e in examples}),
        "by_source": dict(sorted(Counter(e.source for e in examples).items())),
        "by_kind": dict(sorted(Counter(f"{e.source}:{e.kind}" for e in examples).items())),
        "premise_chars_max": max((len(e.premise) for e in examples), default=0),
    }
    if lengths is not None:
        d["tokens"] = int(sum(lengths))
        d["tokens_mean"] = round(sum(lengths) / max(1, len(lengths)), 1)
        d["tokens_max"] = int(max(lengths, default=0))
    return d


ATTRIBUTION = """# {name}: held-out claims for the entailment model

Pairs built by `pipeline/evaluation/entailment_data.py` (seed {seed}) from the articles that
`pipeline/evaluation/train_checker.py` never trains on ({share:.0%} of the articles of each set,
chosen by a seeded hash). Labels are ours: entailment = supported.

Sources (their licences carry over to these pairs):
- JSQuAD v1.3 valid (JGLUE; Kurihara, Kawahara, Shibata, LREC 2022), CC BY-SA 4.0; Japanese Wikipedia text, CC BY-SA.
- JaQuAD dev (So, Byun, Kang, Cho, arXiv:2202.01764), CC BY-SA 3.0; Japanese Wikipedia text.
- JEMHopQA v1.2 (Ishii, Inoue, Suzuki, Sekine, LREC-COLING 2024; RIKEN), CC BY-SA 4.0.

License: **CC BY-SA 4.0** (https://creativecommons.org/licenses/by-sa/4.0/).

Regenerate: `python -m pipeline.evaluation.entailment_data --write-heldout {out}`
"""


def write_pairs(examples: Iterable[Example], folder: Path, card: str = "") -> int:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with (folder / "pairs.jsonl").open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_pair(), ensure_ascii=False) + "\n")
            n += 1
    if card:
        (folder / "SOURCE.md").write_text(card, encoding="utf-8")
    return n


def _main(argv: list[str]) -> int:  # pragma: no cover - a data build step
    cfg = DataConfig()
    splits = build_splits(cfg)
    for name in ("train", "val", "heldout"):
        print(name, json.dumps(summary(getattr(splits, name)), ensure_ascii=False))
    if argv[:1] == ["--write-heldout"] and len(argv) == 2:
        out = Path(argv[1])
        card = ATTRIBUTION.format(name=out.name, seed=cfg.seed, share=cfg.heldout, out=out)
        print(f"{write_pairs(splits.heldout, out, card)} pairs -> {out}/pairs.jsonl")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))

