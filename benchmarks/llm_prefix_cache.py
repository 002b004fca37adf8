"""Time to first token over a packed corpus: the KV state of the corpus prefix loaded
from disk vs reading the whole prompt again (embedded Qwen2.5-1.5B, llama.cpp, CPU).

    .venv/bin/python benchmarks/llm_prefix_cache.py                 # whole demo corpus, n_ctx 16384
    .venv/bin/python benchmarks/llm_prefix_cache.py --target-tokens 12000 --source jsquad

One run, no repetitions (the long read takes minutes at ≈ 50 tokens/s): the figures
are indicative. Steps, each from a clean KV cache unless said otherwise:
  1. prepare_prefix: read the packed corpus once and save its state (one-time cost);
  2. uncached: complete(prompt) — the whole prompt is read again;
  3. from disk: a new backend instance loads the state file and reads only the question;
  4. in memory: a second question right after, same instance (no file load).
Prints a Markdown report (paste it into benchmarks/results/llm.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYSTEM = (
    "あなたは、与えられた資料だけを根拠に日本語で答えるアシスタントです。"
    "答えの各文の末尾に根拠の資料番号を [1] のように付けてください。\n\n資料:\n"
)
QUESTIONS = {
    "demo": ("Ollamaの既定のポートは何番ですか？", "GGUFとは何ですか？"),
    "jsquad": ("梅雨入りとは何を指しますか？", "この資料で最初に説明されている現象は何ですか？"),
}


def demo_documents() -> list[tuple[str, str]]:
    from pipeline.ingest.readers import read_document

    docs = []
    for path in sorted((REPO / "corpora" / "demo").iterdir()):
        doc = read_document(path)
        docs.append((f"demo/{path.name}", doc.text[doc.body_start :].strip()))
    return docs


def jsquad_documents() -> list[tuple[str, str]]:
    path = REPO.parent / "shared" / "evaldata" / "jsquad_v1.3_valid_articles" / "corpus.jsonl"
    with path.open(encoding="utf-8") as f:
        return [(r["doc_id"], r["text"]) for r in map(json.loads, f)]


def packed_corpus(docs, count_tokens, target: int) -> tuple[str, int]:
    """Documents in a stable order, fenced and numbered, up to `target` tokens."""
    parts, total = [], 0
    for i, (name, text) in enumerate(docs, 1):
        block = f'<資料 番号="{i}" 出典="{name}">\n{text}\n</資料>\n\n'
        n = count_tokens(block)
        if total + n > target:
            break
        parts.append(block)
        total += n
    return "".join(parts), total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=sorted(QUESTIONS), default="demo")
    parser.add_argument("--target-tokens", type=int, default=15000, help="corpus size cap (tokens)")
    parser.add_argument("--n-ctx", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--state-dir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)

    from pipeline.answer.backends.llama_cpp import EmbeddedBackend
    from pipeline.settings import Settings, default_cache_dir

    settings = Settings(
        cache_dir=default_cache_dir(), llm_context=args.n_ctx, llm_threads=args.threads,
        llm_model_path=None, llm_flash_attn=False,
    )
    backend = EmbeddedBackend(settings)
    docs = demo_documents() if args.source == "demo" else jsquad_documents()
    corpus, corpus_tokens = packed_corpus(docs, backend.count_tokens, args.target_tokens)
    q1, q2 = QUESTIONS[args.source]
    prompt1 = backend.format_chat(SYSTEM + corpus, "質問: " + q1)
    prompt2 = backend.format_chat(SYSTEM + corpus, "質問: " + q2)
    prefix = prompt1[: prompt1.index("質問: " + q1)]
    n_prefix = len(backend.prompt_tokens(prefix))
    n_prompt = len(backend.prompt_tokens(prompt1))
    print(f"corpus: {args.source}, {corpus_tokens} tokens of documents; prefix {n_prefix}, prompt {n_prompt} tokens",
          flush=True)

    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="rag-kv-"))
    t0 = time.perf_counter()
    backend.llm  # load outside the timings
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    state = backend.prepare_prefix(prefix, "bench", state_dir)
    prepare_s = time.perf_counter() - t0
    size_mb = (state_dir / "bench.bin").stat().st_size / 1e6
    print(f"prepare_prefix: {prepare_s:.1f} s ({n_prefix / prepare_s:.1f} tok/s), state {size_mb:.0f} MB", flush=True)

    backend.reset()
    uncached = backend.complete(prompt1, max_tokens=args.max_tokens)
    print(f"uncached: {uncached.prompt_seconds:.1f} s to first token", flush=True)
    backend.close()

    t0 = time.perf_counter()
    fresh = EmbeddedBackend(settings)
    fresh.llm
    fresh_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fresh.prepare_prefix(prefix, "bench", state_dir)  # finds the file: only registers it
    register_s = time.perf_counter() - t0
    from_disk = fresh.complete(prompt1, max_tokens=args.max_tokens, prefix_cache_key="bench")
    print(f"from disk: {from_disk.prompt_seconds:.2f} s to first token", flush=True)
    in_memory = fresh.complete(prompt2, max_tokens=args.max_tokens, prefix_cache_key="bench")
    print(f"in memory: {in_memory.prompt_seconds:.2f} s to first token", flush=True)
    fresh.close()

    import llama_cpp

    ratio = uncached.prompt_seconds / from_disk.prompt_seconds
    cmd = "python benchmarks/llm_prefix_cache.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"""
## Prefix cache: time to first token over a packed corpus

`{cmd.strip()}` — {time.strftime('%Y-%m-%d')}, llama-cpp-python {llama_cpp.__version__}, {platform.machine()},
{args.threads} threads, n_ctx {args.n_ctx}, Qwen2.5-Coder-1.5B-Instruct Q4_K_M. One run.

Corpus: {args.source}, {len(corpus)} chars, {corpus_tokens} tokens of documents; the cached prefix is
{n_prefix} tokens (instructions + corpus), the full prompt {n_prompt} tokens.

| step | tokens read | time to first token | note |
|---|---:|---:|---|
| prepare_prefix (once per corpus version) | {n_prefix} | {prepare_s:.1f} s | {n_prefix / prepare_s:.1f} tok/s incl. saving {size_mb:.0f} MB |
| uncached question (whole prompt again) | {uncached.prompt_tokens - uncached.cached_prompt_tokens} | {uncached.prompt_seconds:.1f} s | {n_prompt / uncached.prompt_seconds:.1f} tok/s |
| cached, state loaded from disk (new instance) | {from_disk.prompt_tokens - from_disk.cached_prompt_tokens} | {from_disk.prompt_seconds:.2f} s | {from_disk.cached_prompt_tokens} tokens from the state file |
| cached, state already in memory (2nd question) | {in_memory.prompt_tokens - in_memory.cached_prompt_tokens} | {in_memory.prompt_seconds:.2f} s | {in_memory.cached_prompt_tokens} tokens kept |

**Ratio uncached / cached-from-disk: {ratio:.0f}×** (model load {load_s:.1f} s / {fresh_load_s:.1f} s, not included;
registering an existing state {register_s:.2f} s, incl. tokenizing the prefix).

Answers (greedy, {args.max_tokens} tokens): uncached {uncached.text!r}; from disk {from_disk.text!r};
2nd question {in_memory.text!r}.
"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
