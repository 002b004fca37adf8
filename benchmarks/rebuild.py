"""Rebuilding a damaged index vs a first ingest of the same notes (issue 15: goal ≤ 0.3× the
first ingest when the vectors can be reused).

    .venv/bin/python benchmarks/rebuild.py [--data ../shared/evaldata/jaquad_dev_articles] [--docs 40]
                                           [--embed-model hash:256]

Writes the first N articles as notes and times a first ingest. Then, for each damage,
copies that index, damages one file and times the one `rag ingest` run that repairs it.
The embedder is loaded once beforehand (a warm-up call too), as in benchmarks/ingest.py,
so both sides time the same work: reading, chunking, BM25, embedding, Chroma, files.

    manifest.json cut in half   every note indexed again, vectors reused from Chroma
    --rebuild                   the same, asked for
    chunks.jsonl cut in half    the snapshot written again
    one chunk file deleted      one note indexed again
    chroma.sqlite3 garbage      Chroma emptied, every vector embedded again (≈ 1×: no reuse)

Prints a table (seconds, ratio to the first ingest, vectors reused / embedded), the
command line and the load average (the figures are only comparable on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


def _damages(index_dir: Path) -> dict:
    """name -> (function damaging a copy of the index, rebuild flag)."""
    from pipeline.index.manifest import Manifest

    manifest = Manifest.load(index_dir)
    one_chunk_file = next(iter(manifest.documents.values())).chunk_file
    return {
        "manifest.json cut in half": (lambda d: _cut(d / "manifest.json"), False),
        "--rebuild": (lambda d: None, True),
        "chunks.jsonl cut in half": (lambda d: _cut(d / manifest.snapshot / "chunks.jsonl"), False),
        "one chunk file deleted": (lambda d: (d / one_chunk_file).unlink(), False),
        "chroma.sqlite3 garbage": (lambda d: _garbage(d / "chroma" / "chroma.sqlite3"), False),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "evaldata" / "jaquad_dev_articles"))
    ap.add_argument("--docs", type=int, default=40, help="articles to ingest (the first N)")
    ap.add_argument("--embed-model", default=None, help="a settings embed_model (default: the embedded e5)")
    args = ap.parse_args()

    from pipeline.index.embedder import load_embedder
    from pipeline.ingest.sync import Ingestor
    from pipeline.settings import Settings

    docs = [json.loads(line) for line in open(Path(args.data) / "corpus.jsonl", encoding="utf-8")][: args.docs]
    work = Path(tempfile.mkdtemp(prefix="rag-bench-rebuild-"))
    notes = work / "notes"
    notes.mkdir()
    for i, d in enumerate(docs):
        (notes / f"{i:04d}.txt").write_text(d["title"] + "\n" + d["text"] + "\n", encoding="utf-8")

    extra = {"embed_model": args.embed_model} if args.embed_model else {}
    settings = Settings(index_dir=str(work / "first"), **extra)
    embedder = load_embedder(settings)
    embedder.embed_passages(["warm-up"])  # model load and first-call cost out of every timing
    # Imports (Chroma, MeCab, bm25s, llama-index) and their first calls too: one small note.
    (work / "warm-up").mkdir()
    (work / "warm-up" / "note.md").write_text("# 準備\n\n最初の呼び出しの費用を計測から外す。\n", encoding="utf-8")
    Ingestor(settings, work / "warm-up-index", embedder=embedder).run([work / "warm-up"])

    t0 = time.perf_counter()
    first = Ingestor(settings, work / "first", embedder=embedder).run([notes])
    first_s = time.perf_counter() - t0
    rows = [("first ingest", first_s, 1.0, 0, first.embedded_chunks, "")]

    for name, (damage, rebuild) in _damages(work / "first").items():
        index_dir = work / name.replace(" ", "_").replace("-", "").replace(".", "_")
        shutil.copytree(work / "first", index_dir)
        damage(index_dir)
        t0 = time.perf_counter()
        run = Ingestor(settings.model_copy(update={"index_dir": str(index_dir)}), index_dir, embedder=embedder).run(
            [notes], rebuild=rebuild
        )
        seconds = time.perf_counter() - t0
        assert run.documents == first.documents and run.chunks == first.chunks, name
        assert rebuild or run.repaired, f"{name}: the damage was not found"
        rows.append((name, seconds, seconds / first_s, run.reused_vectors, run.embedded_chunks, run.repair_note() or ""))

    print(f"{len(docs)} notes, {first.chunks} chunks, embedder {embedder.name}")
    print(f"{'':28}{'seconds':>9}{'× first':>9}{'reused':>8}{'embedded':>10}")
    for name, seconds, ratio, reused, embedded, _ in rows:
        print(f"{name:28}{seconds:9.2f}{ratio:9.2f}{reused:8d}{embedded:10d}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"load average (1, 5, 15 min): {load}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
