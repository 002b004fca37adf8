"""Scale check: ingest a generated corpus of Japanese notes, then re-run with no change.

    .venv/bin/python benchmarks/scale_ingest.py                 # 2,000 files, hash embedder
    .venv/bin/python benchmarks/scale_ingest.py --files 500 --embed-model embedded:multilingual-e5-small

The first ingest uses the model-free hashing embedder (`hash:256`) by default, to keep
the run short: it measures reading, MeCab, chunking, Chroma and BM25, not the model
(the embedded e5 model embeds ≈ 14 passages/s here, see ARCHITECTURE.md). The no-change
re-run embeds nothing whatever the model, and is measured twice: in-process, and as
the command cron runs (`rag ingest DIR --index IDX --quiet`, a fresh interpreter, so
start-up is counted). Figures are printed as Markdown for benchmarks/results/ops.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPICS = [
    ("量子化", "7Bモデルは4bit量子化で約4GBのメモリで動く", "量子化で精度は少し落ちる"),
    ("Ollama", "Ollamaの既定のポートは11434です", "モデルは ollama pull で取得する"),
    ("検索拡張生成", "RAGは検索した文書を根拠にして回答する手法です", "引用は文ごとに確かめる"),
    ("BM25", "BM25は語の頻度で文書を順位付けする", "日本語ではMeCabの見出し語を数える"),
    ("埋め込み", "e5には query: と passage: の接頭辞が要る", "全角数字１２３も正規化される"),
    ("長文脈", "コーパス全体を文脈に入れると遅い", "接頭辞のKVキャッシュを再利用する"),
    ("評価", "nDCG@10で検索の質を測る", "引用の適合率と再現率を測る"),
    ("推論", "温度を下げると答えが安定する", "2スレッドで毎秒12トークン生成する"),
]


def note(i: int, rng: random.Random) -> tuple[str, str]:
    """(file name, text) of the i-th generated note, in one of three formats."""
    topic, a, b = TOPICS[i % len(TOPICS)]
    sentences = [f"{a}。", f"{b}。"] + [
        f"{topic}についてのメモ{i}の{j}番目の文で、{rng.choice(TOPICS)[1]}という話を補足する。" for j in range(rng.randint(6, 14))
    ]
    body = "\n".join(sentences) + "\n"
    kind = i % 3
    folder = f"{i // 100:02d}"
    if kind == 0:
        return f"{folder}/note{i:05d}.md", f"# {topic} {i}\n\n{body}\n## 補足\n\n§{i % 9 + 1}.{i % 5} を参照。\n"
    if kind == 1:
        return f"{folder}/note{i:05d}.org", f"#+TITLE: {topic} {i}\n* {topic}\n<2025-03-11 Tue 08:28>\n{body}"
    return f"{folder}/note{i:05d}.txt", f"🔗 {topic} {i}\n{body}"


def generate(folder: Path, n: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    total = 0
    for i in range(n):
        name, text = note(i, rng)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        path.write_bytes(data)
        total += len(data)
    return total


def cli_no_change(corpus: Path, index_dir: Path, embed_model: str) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds (user + sys) and the log line of one `rag ingest --quiet`."""
    env = {**os.environ, "RAG_EMBED_MODEL": embed_model}
    env.pop("RAG_FAULT_AT", None)
    cmd = [sys.executable, "-m", "pipeline.cli", "ingest", str(corpus), "--index", str(index_dir), "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out.stdout.split(" ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--embed-model", default="hash:256")
    parser.add_argument("--repeat", type=int, default=5, help="no-change runs to time")
    parser.add_argument("--workdir", type=Path, help="keep corpus and index here (default: a temp dir)")
    args = parser.parse_args()

    from pipeline.ingest.sync import Ingestor
    from pipeline.settings import Settings

    work = args.workdir or Path(tempfile.mkdtemp(prefix="rag-scale-"))
    corpus, index_dir = work / "corpus", work / "index"
    shutil.rmtree(corpus, ignore_errors=True)
    shutil.rmtree(index_dir, ignore_errors=True)
    size = generate(corpus, args.files)
    settings = Settings(index_dir=str(index_dir), embed_model=args.embed_model)

    t = time.perf_counter()
    first = Ingestor(settings, index_dir).run([corpus])
    first_s = time.perf_counter() - t
    assert first.added == args.files and not first.skipped, first.skipped[:3]

    in_process = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        again = Ingestor(settings, index_dir).run([corpus])
        in_process.append(time.perf_counter() - t)
        assert again.embedded_chunks == 0 and again.unchanged == args.files
    cli, cli_cpu = [], []
    for _ in range(args.repeat):
        wall, cpu, line = cli_no_change(corpus, index_dir, args.embed_model)
        assert line["status"] == "ok" and line["embedded_chunks"] == 0 and line["unchanged"] == args.files
        cli.append(wall)
        cli_cpu.append(cpu)

    cmd = f".venv/bin/python benchmarks/scale_ingest.py --files {args.files}" + (
        f" --embed-model {args.embed_model}" if args.embed_model != "hash:256" else ""
    )
    print(f"## Scale: {args.files} generated Japanese notes ({size / 1e6:.1f} MB), embedder {args.embed_model}\n")
    print(f"Command: `{cmd}`  (machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})\n")
    print("| run | seconds | embedded chunks |")
    print("|---|---|---|")
    print(f"| first ingest, in-process ({first_s / args.files * 1000:.0f} ms/file) | {first_s:.1f} | {first.embedded_chunks} ({first.chunks} chunks, {first.documents} documents) |")
    print(f"| no-change re-run, in-process (median of {args.repeat}) | {statistics.median(in_process):.2f} (min {min(in_process):.2f}) | 0 |")
    print(f"| no-change re-run, `rag ingest --quiet` in a fresh process (median of {args.repeat}) | {statistics.median(cli):.2f} (min {min(cli):.2f}; CPU {statistics.median(cli_cpu):.2f}) | 0 |")
    print(f"\nlast `rag ingest --quiet` line: {json.dumps({k: line[k] for k in ('status', 'unchanged', 'embedded_chunks', 'seconds')})}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
