"""One-shot `rag ask`: whole processes, as a person runs it, on the demo index.

    .venv/bin/python benchmarks/ask.py [--index indexes/demo] [--runs 3]

For each question and mode: the median wall time of `rag ask --json` in a new process (model
files in the page cache after the first run), the time to the first generated token (reading
the prompt), the prompt tokens read fresh, and the route taken. Run `rag ingest corpora/demo
--index indexes/demo` first: it prepares the long-context prefix state this measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = (
    ("Ollamaの既定のポート番号は？", "auto"),
    ("vLLMのサーバーが既定で待ち受けるポート番号は？", "auto"),
    ("メモで紹介されているツールをすべて挙げて", "long-context"),
    ("Ollamaのモデルはどのコマンドで取得する？", "long-context"),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", default="indexes/demo")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rag = str(REPO / ".venv/bin/rag")
    print("| question | mode asked | route | wall (median) | first token | tokens read | answer |")
    print("|---|---|---|---:|---:|---:|---|")
    for question, mode in QUESTIONS:
        walls, data = [], {}
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = subprocess.run([rag, "ask", question, "--index", args.index, "--mode", mode, "--json"],
                                 capture_output=True, text=True, cwd=REPO)
            walls.append(time.perf_counter() - t0)
            if out.returncode != 0:
                raise SystemExit(f"rag ask failed ({out.returncode}): {out.stderr[-500:]}")
            data = json.loads(out.stdout)
        answer = data["answer"].replace("\n", " ")[:60]
        print(f"| {question} | {mode} | {data['mode']} | {statistics.median(walls):.1f} s | "
              f"{data['first_token_seconds']} s | {data['tokens_read']} | {answer} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print(f"command: .venv/bin/python benchmarks/ask.py --index {args.index} --runs {args.runs}")


if __name__ == "__main__":
    main()
