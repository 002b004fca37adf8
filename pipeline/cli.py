"""The `rag` command: parses arguments, calls one library function, renders the result.

Heavy libraries (torch, sentence-transformers, chromadb, fugashi) are imported inside
commands so `rag --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from pipeline.errors import RagError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="日本語ノートのための RAG: 取り込み (ingest)、検索 (search)、質問 (ask)。",
)

eval_app = typer.Typer(no_args_is_help=True, help="評価: retrieval / answers / citations。")
app.add_typer(eval_app, name="eval")

IndexOpt = typer.Option(None, "--index", help="インデックスのフォルダ (既定: indexes/default)。")
JsonOpt = typer.Option(False, "--json", help="結果を JSON 1 個で出力する。")


def _settings(index: Optional[Path] = None):
    from pipeline.settings import load_settings

    return load_settings(index_dir=str(index) if index else None)


def _display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


class _RichReporter:
    """A progress bar on a terminal."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("取り込み中"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[path]}"),
            transient=True,
        )
        self.task = None

    def start(self, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("ingest", total=total, path="")

    def advance(self, path: str) -> None:
        self.progress.update(self.task, advance=1, path=Path(path).name)

    def log(self, message: str) -> None:
        self.progress.console.log(message)

    def stop(self) -> None:
        self.progress.stop()


class _LogReporter:
    """Plain log lines on stderr (cron, --quiet)."""

    def start(self, total: int) -> None:
        if total:
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ingest: {total} files to index", file=sys.stderr)

    def advance(self, path: str) -> None: ...

    def log(self, message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ingest: {message}", file=sys.stderr)

    def stop(self) -> None: ...


@app.command()
def ingest(
    paths: List[Path] = typer.Argument(..., help="取り込むファイルやフォルダ。"),
    index: Optional[Path] = IndexOpt,
    as_json: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="進捗バーを出さず、1 行のログだけ (cron 向け)。"),
    wait: float = typer.Option(0.0, "--wait", help="別の取り込みが実行中なら最大この秒数だけ待つ。"),
):
    """フォルダを取り込み、変更されたファイルだけを埋め込み直す。

    例: rag ingest corpora/demo --index indexes/demo --json
    """
    from pipeline.ingest.sync import Ingestor

    settings = _settings(index)
    interactive = sys.stderr.isatty() and not quiet and not as_json
    reporter = _RichReporter() if interactive else _LogReporter()
    try:
        summary = Ingestor(settings, Path(settings.index_dir)).run(paths, reporter, wait=wait)
    finally:
        reporter.stop()
    data = summary.to_dict()
    if as_json:
        _echo_json(data)
    elif quiet:
        line = {k: data[k] for k in ("added", "changed", "deleted", "unchanged", "embedded_chunks", "documents", "chunks", "seconds")}
        line["skipped"] = data["skipped"]
        line["index"] = data["index_dir"]
        typer.echo("rag-ingest " + json.dumps(line, ensure_ascii=False))
    else:
        typer.echo(
            f"追加 {summary.added} / 変更 {summary.changed} / 削除 {summary.deleted} / "
            f"変更なし {summary.unchanged} / スキップ {len(summary.skipped)} — "
            f"埋め込み {summary.embedded_chunks} チャンク, 計 {summary.documents} 文書 "
            f"{summary.chunks} チャンク ({summary.seconds:.1f} 秒)"
        )
        for s in summary.skipped:
            typer.echo(f"  スキップ: {_display_path(s['path'])}: {s['reason']}", err=True)


@app.command()
def search(
    question: str = typer.Argument(..., help="検索する質問や語句。"),
    k: int = typer.Option(5, "-k", help="返すチャンク数。"),
    index: Optional[Path] = IndexOpt,
    retriever: str = typer.Option("hybrid", "--retriever", help="bm25 | dense | hybrid"),
    as_json: bool = JsonOpt,
):
    """質問に近いチャンクを path:行 とスコア付きで表示する。

    例: rag search "Ollamaの既定のポートは？" -k 3
    """
    from pipeline.index.search import search as run_search
    from pipeline.index.snapshot import open_index

    settings = _settings(index)
    if retriever not in ("bm25", "dense", "hybrid"):
        raise typer.BadParameter("bm25 | dense | hybrid のどれかを指定してください", param_hint="--retriever")
    hits = run_search(open_index(settings), question, k=k, retriever=retriever)
    if as_json:
        _echo_json(
            [
                {
                    "rank": i + 1,
                    "path": _display_path(h.chunk.path),
                    "lines": [h.chunk.line_start, h.chunk.line_end],
                    "start": h.chunk.start,
                    "end": h.chunk.end,
                    "score": round(h.score, 6),
                    "text": h.chunk.text,
                }
                for i, h in enumerate(hits)
            ]
        )
        return
    if not hits:
        typer.echo("該当するチャンクがありません。")
    for i, h in enumerate(hits, 1):
        c = h.chunk
        typer.echo(f"[{i}] {_display_path(c.path)}:{c.line_start}  (score {h.score:.4f})")
        typer.echo("    " + c.text.replace("\n", "\n    "))


def main() -> None:
    """Entry point: library errors become their exit code and a message, once."""
    try:
        app(standalone_mode=False)
    except RagError as err:
        typer.echo(f"エラー: {err}", err=True)
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("中断しました。", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
