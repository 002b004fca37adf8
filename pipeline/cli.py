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

@app.command()
def ask(
    question: str = typer.Argument(..., help="日本語の質問。"),
    mode: str = typer.Option("auto", "--mode", help="auto | retrieve | long-context"),
    backend: Optional[str] = typer.Option(None, "--backend", help="embedded | ollama | openai | extractive"),
    policy: Optional[str] = typer.Option(None, "--policy", help="annotate | strip | refuse (裏付けのない文の扱い)"),
    explain: bool = typer.Option(False, "--explain", help="ルーターの判断理由と推定値を表示する。"),
    index: Optional[Path] = IndexOpt,
    as_json: bool = JsonOpt,
):
    """資料に基づいて答え、各文の引用 [n] を資料と照合して表示する。

    例: rag ask "Ollamaの既定のポート番号は？" --index indexes/demo --explain
    """
    from pipeline.answer.engine import answer_to_dict
    from pipeline.api import answerer_for

    if mode not in ("auto", "retrieve", "long-context"):
        raise typer.BadParameter("auto | retrieve | long-context", param_hint="--mode")
    if policy not in (None, "annotate", "strip", "refuse"):
        raise typer.BadParameter("annotate | strip | refuse", param_hint="--policy")
    settings = _settings(index)
    answerer = answerer_for(settings, backend=backend)
    answer = answerer.ask(question, mode=mode, policy=policy)
    data = answer_to_dict(answer)
    if as_json:
        _echo_json(data)
        return
    _render_answer(data, explain)


def _render_answer(data: dict, explain: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    marks = {"supported": "", "supported_by_other": " [yellow](引用を修正)[/]", "unsupported": " [red](資料で裏付けられない)[/]", "uncited": " [red](引用なし)[/]"}
    console.print(f"[bold]回答[/] ({data['backend']}, モード {data['mode']}"
                  + (f", {data['fallback_from']} から再試行" if data["fallback_from"] else "") + ")")
    if data["refused"] or not data["sentences"] or all(s.get("verdict") is None for s in data["sentences"]):
        console.print(escape(data["answer"]))
    else:
        for s in data["sentences"]:
            console.print(escape(s["text"]) + marks.get(s.get("verdict"), ""))
    cited = [s for s in data["sources"] if s["cited"]] or data["sources"][:3]
    console.print("\n[bold]出典[/]")
    for s in cited:
        console.print(f"  [{s['number']}] {escape(s['path'])}:{s['lines'][0]}-{s['lines'][1]}")
    if data["citation_recall"] is not None:
        console.print(f"\n引用の再現率 {data['citation_recall']:.2f} / 適合率 {data['citation_precision']:.2f}")
    route = data["route"]
    console.print(f"\n[bold]経路[/] {data['mode']}: {escape(route['reasons'][-1])}")
    if explain:
        for r in route["reasons"][:-1]:
            console.print(f"  - {escape(r)}")
        for name, est in route["estimates"].items():
            console.print(f"  - {name}: 読むトークン {est['input_tokens']}, 推定 {est['seconds']} 秒, 費用 {est['cost']}")
        console.print(f"  - 実測 {data['seconds']} 秒, 読んだトークン {data['tokens_read']}")


@app.command()
def status(index: Optional[Path] = IndexOpt, as_json: bool = JsonOpt):
    """インデックスの中身と鮮度 (前回の取り込み、その後に変わったファイル) を表示する。

    例: rag status --index indexes/demo
    """
    from pipeline.index.status import index_status

    data = index_status(_settings(index))
    if as_json:
        _echo_json(data)
        return
    last = data["last_ingest"] or {}
    changed = data["changed_since_ingest"]
    lines = [
        f"インデックス: {data['index_dir']} (世代 {data['generation']}, {data['size_bytes'] / 1e6:.1f} MB)",
        f"文書 {data['documents']} / チャンク {data['chunks']} / 文字 {data['characters']} / "
        f"埋め込みトークン {data['embedding_tokens']}",
        f"形式 {data['formats']}  文字コード {data['encodings']}",
        f"埋め込みモデル {data['embed_model']} (チャンク {data['chunk_tokens']} トークン)",
        f"LLM {data['llm_backend']}: 窓 {data['long_context_window']} トークン, コーパス推定 "
        f"{data['llm_tokens_estimated']} トークン → " + ("全体が窓に入る" if data["fits_long_context"] else "窓に入らない"),
        "前回の取り込み: " + (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["finished_at"]))
            + f" (追加 {last['added']}, 変更 {last['changed']}, 削除 {last['deleted']}, スキップ {len(last['skipped'])})"
            if last else "記録なし"
        ),
        f"その後の変更: 更新 {len(changed['modified'])}, 削除 {len(changed['deleted'])}, 新規 {len(changed['new'])}",
    ]
    for key, label in (("modified", "更新"), ("deleted", "削除"), ("new", "新規")):
        for p in changed[key][:20]:
            lines.append(f"  {label}: {_display_path(p)}")
    typer.echo("\n".join(lines))



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
