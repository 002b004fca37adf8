"""Whole-process time and peak memory of everyday commands, as a person types them.

    python benchmarks/startup.py                       # the demo index (built first if missing)
    python benchmarks/startup.py --index indexes/demo --runs 5 --json

Each command runs as its own process (`rag` from this interpreter's environment), once
untimed (files into the page cache), then `--runs` times; the table shows the median wall
time and the median peak RSS (`os.wait4`'s ru_maxrss of that process). The one-shot search
is the issue-14 figure: a question typed once, the model loaded for it. A benchmark, not a
test: the numbers depend on the machine and on what else runs on it, so the load average
before and after is printed with them, and the line to reproduce them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "corpora" / "demo"
QUESTION = "Ollamaの既定のポートは？"


def rag_command() -> list[str]:
    exe = Path(sys.executable).parent / "rag"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]


def run_once(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one process; raises when it fails."""
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE, cwd=REPO)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    return wall, usage.ru_maxrss / 1024  # Linux: kilobytes


def measure(cmd: list[str], runs: int) -> dict:
    run_once(cmd)  # untimed: page cache, compiled bytecode
    samples = [run_once(cmd) for _ in range(runs)]
    walls, peaks = [s[0] for s in samples], [s[1] for s in samples]
    return {
        "wall_s": round(statistics.median(walls), 3),
        "peak_mib": round(statistics.median(peaks), 1),
        "walls": [round(w, 3) for w in walls],
        "peaks_mib": [round(p, 1) for p in peaks],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, default=REPO / "indexes" / "demo")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    rag = rag_command()
    index = args.index.resolve()
    if not (index / "manifest.json").exists():
        print(f"building {index} from {DEMO} (untimed)", file=sys.stderr)
        subprocess.run([*rag, "ingest", str(DEMO), "--index", str(index), "--quiet"], check=True, cwd=REPO)
    commands = {
        "rag --help": [*rag, "--help"],
        f'rag search "{args.question}" -k 3': [*rag, "search", args.question, "-k", "3", "--index", str(index)],
        f"rag ingest {DEMO.relative_to(REPO)} --quiet (nothing changed)": [
            *rag, "ingest", str(DEMO), "--index", str(index), "--quiet"],
        "rag status": [*rag, "status", "--index", str(index)],
    }
    load_before = os.getloadavg()
    results = {name: measure(cmd, args.runs) for name, cmd in commands.items()}
    load_after = os.getloadavg()
    reproduce = "(from the repository root) " + shlex.join(
        ["python", "benchmarks/startup.py", "--index", os.path.relpath(args.index, REPO), "--runs", str(args.runs)]
    )
    report = {
        "index": str(index),
        "runs": args.runs,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "reproduce": reproduce,
        "commands": results,
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"| command | wall (median of {args.runs}) | peak memory |")
    print("|---|---:|---:|")
    for name, r in results.items():
        print(f"| `{name}` | {r['wall_s']:.2f} s | {r['peak_mib']:.0f} MiB |")
    print()
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}; "
          f"{report['cpus']} CPUs; Python {report['python']}; index {index}")
    print(f"reproduce: {reproduce}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
