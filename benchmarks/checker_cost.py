"""Citation checker: cost per answer sentence, and what the LLM judge adds.

    .venv/bin/python benchmarks/checker_cost.py                 # cost, cheap and embed modes
    .venv/bin/python benchmarks/checker_cost.py --judge         # + the embedded LLM as judge
    .venv/bin/python benchmarks/checker_cost.py --judge --judge-pairs 40,30,0

Cost: answers built from claims_jsquad (holdout half): one claim sentence citing its
gold paragraph [1], with a sibling paragraph as [2], checked with `CitationChecker.check`.
Reported per answer sentence: cheap signals only, + embedder (warm), + LLM judge (as
configured: only sentences in the uncertain band), and one judge call alone.

Judge quality (--judge): P(はい) of the embedded LLM (`pipeline.answer.judge.llm_judge`) on a sample of each
dataset, tune and holdout halves (N pairs per half for jnli, claims_jsquad, claims_roles),
cached in $RAG_CITATION_CACHE/judge_<backend>.json; `refit` fits the combination on the
tune sample. Prints AUROC of the judge alone and of embed vs embed+judge on the holdout sample.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.evaluation.citations import DEFAULT_SETS, auroc, judge_cache_path, load_pairs, split_of  # noqa: E402


def _answers(n: int):
    from pipeline.documents import Chunk, Source

    pairs = [p for p in load_pairs(REPO / DEFAULT_SETS["claims_jsquad"], split="holdout")]
    right = [p for p in pairs if p["meta"]["kind"] == "right"][:n]
    sib = {p["meta"]["qid"]: p["premise"] for p in pairs if p["meta"]["kind"] == "sibling"}
    out = []
    for p in right:
        s1 = Chunk("gold", "/wiki/gold.txt", p["premise"], 0, len(p["premise"]), 1, 1)
        other = sib.get(p["meta"]["qid"], "（なし）")
        s2 = Chunk("sib", "/wiki/sib.txt", other, 0, len(other), 1, 1)
        out.append((p["hypothesis"].rstrip("。") + "[1]。", [Source(1, s1), Source(2, s2)]))
    return out


def cost(checker, answers) -> float:
    t0 = time.perf_counter()
    n = 0
    for answer, sources in answers:
        n += len(checker.check(answer, sources).verdicts)
    return (time.perf_counter() - t0) / max(n, 1)


def judge_quality(judge, backend_name: str, sizes: dict[str, int], embed_checker) -> dict:
    from pipeline.check.citations import claim_text

    path = judge_cache_path(backend_name)
    cache = json.loads(path.read_text("utf-8")) if path.exists() else {}
    rng = random.Random(7)
    report = {}
    for name, folder in DEFAULT_SETS.items():
        pairs = load_pairs(REPO / folder) if not Path(folder).is_absolute() else load_pairs(folder)
        for half in ("tune", "holdout"):
            sel = [p for p in pairs if split_of(p) == half]
            rng.shuffle(sel)
            sel = sel[: sizes[name]]
            t0 = time.perf_counter()
            calls = 0
            for p in sel:
                key = hashlib.sha1((p["premise"] + "\x00" + p["hypothesis"]).encode()).hexdigest()
                if key not in cache:
                    claim = claim_text(p["hypothesis"])
                    cache[key] = judge(embed_checker.judge_evidence(p["premise"], claim), claim)
                    calls += 1
                    if calls % 20 == 0:
                        path.write_text(json.dumps(cache), "utf-8")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cache), "utf-8")
            secs = (time.perf_counter() - t0) / calls if calls else None
            y = [int(p["label"] == "entailment") for p in sel]
            pj = [cache[hashlib.sha1((p["premise"] + "\x00" + p["hypothesis"]).encode()).hexdigest()] for p in sel]
            pe = [embed_checker.support(p["premise"], p["hypothesis"]) for p in sel]
            report[f"{name}/{half}"] = {
                "n": len(sel),
                "auroc_judge": round(auroc(y, pj), 4),
                "auroc_embed": round(auroc(y, pe), 4),
                "seconds_per_judge_call": round(secs, 3) if secs else None,
            }
            print(name, half, report[f"{name}/{half}"], file=sys.stderr)
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", type=int, default=40)
    ap.add_argument("--judge", action="store_true")
    ap.add_argument("--judge-pairs", default="40,30,0", help="pairs per half: jnli,claims_jsquad,claims_roles")
    ap.add_argument("--judge-answers", type=int, default=15, help="answers checked with the judge (cost)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    args = ap.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

    from pipeline.answer.judge import llm_judge
    from pipeline.check import CitationChecker
    from pipeline.index.embedder import load_embedder
    from pipeline.settings import load_settings

    settings = load_settings()
    answers = _answers(args.answers)
    out: dict = {"answers": len(answers), "torch_threads": args.torch_threads or "default"}
    cheap = CitationChecker(settings)
    cost(cheap, answers[:3])  # MeCab warm-up
    out["cheap_s_per_sentence"] = round(cost(cheap, answers), 4)
    t0 = time.perf_counter()
    emb = load_embedder(settings)
    out["embedder_load_s"] = round(time.perf_counter() - t0, 1)
    embed = CitationChecker(settings, embedder=emb)
    cost(embed, answers[:3])
    out["embed_s_per_sentence"] = round(cost(embed, answers), 4)
    if args.judge:
        from pipeline.answer.backends import load_backend

        t0 = time.perf_counter()
        backend = load_backend(settings)
        judge = llm_judge(backend)
        judge("資料。", "主張。")  # load the model
        out["llm_load_s"] = round(time.perf_counter() - t0, 1)
        with_judge = CitationChecker(settings, embedder=emb, judge=judge)
        out["embed_judge_s_per_sentence"] = round(cost(with_judge, answers[: args.judge_answers]), 4)
        out["judge_calls"] = with_judge.judge_calls
        t0 = time.perf_counter()
        for answer, sources in answers[:5]:
            judge(sources[0].chunk.text, answer)
        out["one_judge_call_whole_paragraph_s"] = round((time.perf_counter() - t0) / 5, 3)
        sizes = dict(zip(DEFAULT_SETS, map(int, args.judge_pairs.split(","))))
        out["judge_quality"] = judge_quality(judge, settings.llm_backend, sizes, embed)
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
