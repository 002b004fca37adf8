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

from pipeline.documents import display_path as _display_path
from pipeline.errors import RagError

# pretty_exceptions_enable=False: rich never prints a traceback; main() handles every error.
# Typer reads help text as rich markup: a literal 「[n]」 is written \[n] (r"""docstring""").
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="日本語ノートのための RAG: 取り込み (ingest)、検索 (search)、質問 (ask)。",
)

eval_app = typer.Typer(
    no_args_is_help=True, pretty_exceptions_enable=False, help="評価: retrieval / answers / citations。"
)
app.add_typer(eval_app, name="eval")

IndexOpt = typer.Option(None, "--index", help="インデックスのフォルダ (既定: indexes/default)。")
JsonOpt = typer.Option(False, "--json", help="結果を JSON 1 個で出力する。")


def _settings(index: Optional[Path] = None):
    from pipeline.settings import load_settings

    return load_settings(index_dir=str(index) if index else None)


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


class _RichReporter:
    """A progress bar on a terminal."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("取り込み中"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TextColumn("残り"), TimeRemainingColumn(), TextColumn("{task.fields[path]}"),
            transient=True,
        )
        self.task = None
        self.chunks, self.started = 0, time.perf_counter()

    def start(self, total: int) -> None:
        self.progress.start()
        self.started = time.perf_counter()
        self.task = self.progress.add_task("ingest", total=total, path="", rate="")

    def advance(self, path: str) -> None:
        self.progress.update(self.task, advance=1, path=Path(path).name)

    def embedded(self, chunks: int) -> None:
        self.chunks += chunks
        rate = self.chunks / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, rate=f"{self.chunks} チャンク {rate:.1f}/秒")

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

    def embedded(self, chunks: int) -> None: ...

    def log(self, message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ingest: {message}", file=sys.stderr)

    def stop(self) -> None: ...


class _QuietReporter(_LogReporter):
    """--quiet: the one `rag-ingest {json}` line on stdout is the whole output."""

    def start(self, total: int) -> None: ...

    def log(self, message: str) -> None: ...


def _ingest_line(status: str, index_dir: str, **fields) -> str:
    """The structured log line of one `rag ingest --quiet` run (parse everything after the prefix)."""
    line = {"status": status, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields, "index": index_dir}
    return "rag-ingest " + json.dumps(line, ensure_ascii=False)


@app.command()
def ingest(
    paths: List[Path] = typer.Argument(..., help="取り込むファイルやフォルダ。"),
    index: Optional[Path] = IndexOpt,
    as_json: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="進捗バーを出さず、1 行のログだけ (cron 向け)。"),
    wait: float = typer.Option(0.0, "--wait", help="別の取り込みが実行中なら最大この秒数だけ待つ。"),
    skip_if_locked: bool = typer.Option(
        False, "--skip-if-locked",
        help="別の取り込みが実行中なら (--wait の後も) 何もせず終了コード 0 で終わる (cron 向け)。",
    ),
    rebuild: bool = typer.Option(
        False, "--rebuild",
        help="インデックスをノートから作り直す (Chroma に残っている同じチャンクのベクトルは再利用)。",
    ),
    no_prefix: bool = typer.Option(
        False, "--no-prefix",
        help="取り込み後に長文脈の準備 (コーパス全体を LLM に一度読ませて状態を保存) をしない。",
    ),
):
    """フォルダを取り込み、変更されたファイルだけを埋め込み直す。壊れたインデックスはノートから作り直す。
    コーパスが LLM の窓に入るなら、続けて長文脈の準備をする (コーパス全体を一度読んで状態を保存し、
    rag ask が質問の分だけ読めばよいようにする。古い状態は消す。--no-prefix で省略)。

    例: rag ingest corpora/demo --index indexes/demo --json
    cron: rag ingest ~/notes --index ~/.local/share/rag/notes --quiet --skip-if-locked
    作り直し: rag ingest ~/notes --index ~/.local/share/rag/notes --rebuild
    """
    from pipeline.errors import IndexLocked
    from pipeline.ingest.sync import Ingestor

    settings = _settings(index)
    interactive = sys.stderr.isatty() and not quiet and not as_json
    reporter = _RichReporter() if interactive else _QuietReporter() if quiet else _LogReporter()
    try:
        summary = Ingestor(settings, Path(settings.index_dir)).run(paths, reporter, wait=wait, rebuild=rebuild)
    except IndexLocked as err:
        if not skip_if_locked:
            if quiet:
                typer.echo(_ingest_line("error", err.index_dir, exit_code=err.exit_code, error=str(err)))
            raise
        message = "skipped: another ingest is running (別の取り込みが実行中のためスキップしました)"
        if quiet:
            typer.echo(_ingest_line("locked", err.index_dir, message=message))
        elif as_json:
            _echo_json({"status": "locked", "index_dir": err.index_dir, "message": message})
        else:
            typer.echo(f"{message}: {err.index_dir}", err=True)
        return
    except Exception as err:
        if quiet:  # cron logs get a parseable line for failures too; the exit code stays non-zero
            code = err.exit_code if isinstance(err, RagError) else 1
            typer.echo(_ingest_line("error", str(settings.index_dir), exit_code=code, error=str(err)))
        raise
    finally:
        reporter.stop()
    data = summary.to_dict()
    prefix = None
    if not no_prefix:
        log = None if quiet or as_json else reporter.log if isinstance(reporter, _LogReporter) else _stderr
        prefix = _prepare_long_context(settings, log)
        if prefix.status == "failed" and not quiet:
            typer.echo(f"警告: {prefix.message}", err=True)
    data["prefix"] = prefix.to_dict() if prefix else None
    if as_json:
        _echo_json(data)
    elif quiet:
        keys = ("added", "changed", "deleted", "unchanged", "embedded_chunks", "documents", "chunks", "seconds", "skipped", "warnings")
        repair = ("repaired", "reindexed", "reused_vectors", "repair_note") if data["repair_note"] else ()
        typer.echo(_ingest_line("ok", data["index_dir"], **{k: data[k] for k in keys + repair + ("prefix",)}))
    else:
        typer.echo(
            f"追加 {summary.added} / 変更 {summary.changed} / 削除 {summary.deleted} / "
            f"変更なし {summary.unchanged} / スキップ {len(summary.skipped)} — "
            + (f"作り直し {summary.reindexed} 文書, " if summary.reindexed else "")
            + f"埋め込み {summary.embedded_chunks} チャンク, 計 {summary.documents} 文書 "
            f"{summary.chunks} チャンク ({summary.seconds:.1f} 秒)"
        )
        for s in summary.skipped:
            typer.echo(f"  スキップ: {_display_path(s['path'])}: {s['reason']}", err=True)
        if summary.repair_note():
            typer.echo(summary.repair_note())
        for r in summary.repaired:
            typer.echo(f"  破損: {_display_path(r['path'])}: {r['problem']}", err=True)
        if prefix is not None and prefix.status != "failed":
            typer.echo(f"{prefix.message} ({prefix.seconds:.1f} 秒)")


def _stderr(message: str) -> None:
    typer.echo(message, err=True)


def _prepare_long_context(settings, log):
    """`api.prepare_long_context` after an ingest, which its failure does not fail: a missing
    model, a full disk or a bug becomes a "failed" report (the traceback of a bug goes to a log)."""
    from pipeline.api import PrefixReport, prepare_long_context

    try:
        return prepare_long_context(settings=settings, log=log)
    except Exception as err:  # noqa: BLE001 - the notes are indexed; answering still works without it
        detail = " ".join(str(err).split())[:300]
        if not isinstance(err, (RagError, OSError)):
            crash = _crash_log(err)
            detail = f"{type(err).__name__}: {detail}" + (f" (詳細: {crash})" if crash else "")
        return PrefixReport("failed", f"長文脈の準備に失敗しました (取り込みは完了しています): {detail}")


@app.command()
def search(
    question: str = typer.Argument(..., help="検索する質問や語句。"),
    k: int = typer.Option(5, "-k", help="返すチャンク数。"),
    index: Optional[Path] = IndexOpt,
    retriever: str = typer.Option("hybrid", "--retriever", help="bm25 | dense | hybrid"),
    rerank: bool = typer.Option(
        False, "--rerank", help="上位の候補を再順位付けモデルで並べ直す (モデルの読み込みに数秒、並べ直しに約 1 秒)。"
    ),
    as_json: bool = JsonOpt,
):
    """質問に近いチャンクを path:行 とスコア付きで表示する。

    例: rag search "Ollamaの既定のポートは？" -k 3
    例: rag search "Ollamaの既定のポートは？" -k 3 --rerank
    """
    from pipeline.index.search import check_query, search as run_search
    from pipeline.index.snapshot import open_index

    check_query(question, k)  # before anything loads: an empty question or -k 0 exits 2
    settings = _settings(index)
    if retriever not in ("bm25", "dense", "hybrid"):
        raise typer.BadParameter("bm25 | dense | hybrid のどれかを指定してください", param_hint="--retriever")
    if rerank:
        from pipeline.index.rerank import load_reranker, search_reranked

        reranker = load_reranker(settings)
        if reranker is None:
            raise typer.BadParameter("設定 reranker が空です。再順位付けモデルを指定してください", param_hint="--rerank")
        hits = search_reranked(open_index(settings), question, k, reranker, settings.reranker_candidates, retriever)
    else:
        hits = run_search(open_index(settings), question, k=k, retriever=retriever)
    if as_json:
        _echo_json([{"rank": i, **h.to_dict()} for i, h in enumerate(hits, 1)])
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
    r"""資料に基づいて答え、各文の引用 \[n] を資料と照合して表示する。

    例: rag ask "Ollamaの既定のポート番号は？" --index indexes/demo --explain
    """
    from pipeline.api import answerer_for

    if mode not in ("auto", "retrieve", "long-context"):
        raise typer.BadParameter("auto | retrieve | long-context", param_hint="--mode")
    if policy not in (None, "annotate", "strip", "refuse"):
        raise typer.BadParameter("annotate | strip | refuse", param_hint="--policy")
    from pipeline.index.search import check_query

    check_query(question)  # before the models load: an empty or over-long question exits 2
    settings = _settings(index)
    answerer = answerer_for(settings, backend=backend)
    answer = answerer.ask(question, mode=mode, policy=policy)
    data = answer.to_dict()
    if as_json:
        _echo_json(data)
        return
    _render_answer(data, explain)


def _render_answer(data: dict, explain: bool, console=None) -> None:
    """The answer for a person, wrapped to the terminal at phrase boundaries. Every text
    is a rich Text, never markup: a note's 「[bold]」 or 「[1]」 prints as written."""
    from rich.console import Console
    from rich.text import Text

    from pipeline.render import print_wrapped

    console = console or Console()

    def say(text, first: str = "", indent: str = "") -> None:
        print_wrapped(console, text, first, indent)

    marks = {"supported_by_other": ("(引用を修正)", "yellow"), "unsupported": ("(資料で裏付けられない)", "red"),
             "uncited": ("(引用なし)", "red")}
    retried = f", {data['fallback_from']} から再試行" if data["fallback_from"] else ""
    say(Text.assemble(("回答", "bold"), f" ({data['backend']}, モード {data['mode']}{retried})"))
    label = data.get("label")
    if label:
        say(label)
    if data["refused"] or not data["sentences"] or all(s.get("verdict") is None for s in data["sentences"]):
        answer = data["answer"]
        say(answer[len(label):].lstrip("\n") if label and answer.startswith(label) else answer)
    else:
        from pipeline.check.citations import claim_text

        short, first = data.get("short_answer"), data["sentences"][0]
        if short and len(data["sentences"]) == 1 and short != claim_text(first["text"]).strip():
            # The phrase that answers, first; the sentence it comes from, checked, under it.
            cites = first["fixed_citations"] if first.get("verdict") != "supported" and first.get("fixed_citations") \
                else first["citations"]
            say(Text.assemble((short, "bold"), f" [{', '.join(map(str, cites))}]" if cites else ""), "  ", "  ")
        for s in data["sentences"]:
            line = Text(s["text"])
            if s.get("verdict") in marks:
                line.append(" ").append(*marks[s["verdict"]])
            # A supported sentence's fixed_citations are the ones it needs; show only a moved citation.
            if s.get("verdict") != "supported" and s.get("fixed_citations"):
                line.append(f" → [{', '.join(map(str, s['fixed_citations']))}]")
            say(line)
    cited = [s for s in data["sources"] if s["cited"]]
    console.print()
    # Nothing cited (a refusal, 「分かりません」): what was read, not what the answer rests on.
    say(Text("出典" if cited else "読んだ資料 (引用なし)", style="bold"))
    cited = cited or data["sources"][:3]
    for s in cited:
        say(f"[{s['number']}] {s['path']}:{s['lines'][0]}-{s['lines'][1]}", "  ", "    ")
    if data["citation_recall"] is not None:
        console.print()
        say(f"引用の再現率 {data['citation_recall']:.2f} / 適合率 {data['citation_precision']:.2f}")
    route = data["route"]
    console.print()
    say(Text.assemble(("経路", "bold"), f" {data['mode']}: {route['reasons'][-1]}"), indent="  ")
    if explain:
        for r in route["reasons"][:-1]:
            say(r, "  - ", "    ")
        for name, est in route["estimates"].items():
            say(f"{name}: 読むトークン {est['input_tokens']}, 推定 {est['seconds']} 秒, 費用 {est['cost']}", "  - ", "    ")
        say(f"実測 {data['seconds']} 秒, 読んだトークン {data['tokens_read']}", "  - ", "    ")
        say(f"再順位付け: {data['reranker']}" if data.get("reranker") else "再順位付け: なし (融合の順位のまま)",
            "  - ", "    ")
        if data.get("checker"):
            c = data["checker"]
            fallback = f" ← {c['fallback'].splitlines()[0]}" if c["fallback"] else ""
            say(f"引用チェック: {c['mode']} (しきい値 {c['threshold']}){fallback}", "  - ", "    ")


@app.command()
def status(index: Optional[Path] = IndexOpt, as_json: bool = JsonOpt):
    """インデックスの中身と鮮度 (前回の取り込み、その後に変わったファイル) を表示する。

    例: rag status --index indexes/demo
    """
    from pipeline.ingest.status import index_status

    data = index_status(_settings(index))
    if as_json:
        _echo_json(data)
        return
    from pipeline.render import status_lines

    typer.echo("\n".join(status_lines(data)))



@eval_app.command("citations")
def eval_citations(
    data_dir: Path = typer.Argument(..., help="pairs.jsonl (premise, hypothesis, label) のあるフォルダ。"),
    limit: Optional[int] = typer.Option(None, "--limit", help="先頭 N 組だけ評価する。"),
    split: str = typer.Option("all", "--split", help="all | tune | holdout (重みの調整に使った半分 / 使っていない半分)。"),
    no_embedder: bool = typer.Option(False, "--no-embedder", help="モデルを使わず、安い特徴だけで判定する (--model cheap)。"),
    model: Optional[str] = typer.Option(
        None, "--model", help="auto | entailment | embedding | cheap (既定: 設定の citation_model)。"
    ),
    llm_judge: bool = typer.Option(False, "--llm-judge", help="迷う組だけ LLM に「はい/いいえ」を聞く (設定の llm_backend)。"),
    as_json: bool = JsonOpt,
):
    """引用チェッカーを含意ペアで評価する (entailment = 裏付けあり): AUROC、正しい主張が
    「裏付けなし」とされた割合、正解率、「裏付けなし」の適合率・再現率、1 組あたりの秒数。
    含意モデルが学習に使った記事の主張は除いて評価する。

    例: rag eval citations ../shared/evaldata/jnli_v1.3_valid --limit 200 --json
    """
    from pipeline.evaluation.citations import run_eval

    if split not in ("all", "tune", "holdout"):
        raise typer.BadParameter("all | tune | holdout", param_hint="--split")
    if model not in (None, "auto", "entailment", "embedding", "cheap"):
        raise typer.BadParameter("auto | entailment | embedding | cheap", param_hint="--model")
    settings = _settings()
    judge = None
    if llm_judge:
        from pipeline.answer.backends import load_backend
        from pipeline.answer.judge import llm_judge as make_judge

        judge = make_judge(load_backend(settings))
    progress = None if as_json else (lambda n: typer.echo(f"  {n} 組…", err=True))
    ev = run_eval(settings, data_dir, limit=limit, split=split, use_embedder=not no_embedder,
                  judge=judge, progress=progress, model=model)
    if as_json:
        _echo_json(ev.to_dict())
        return
    typer.echo(
        f"{data_dir}: {ev.n} 組 (裏付けあり {ev.supported}), 判定 {ev.mode}, しきい値 {ev.threshold:.2f}"
        + (f", 学習に使った {ev.excluded_trained} 組を除外" if ev.excluded_trained else "") + "\n"
        f"  AUROC {ev.auroc:.3f}  正しい主張のうち裏付けなしとされた割合 {ev.correct_flagged:.1%}  正解率 {ev.accuracy:.3f}  "
        f"裏付けなしの適合率 {ev.precision_unsupported:.3f} / 再現率 {ev.recall_unsupported:.3f}\n"
        f"  1 組 {ev.seconds_per_pair * 1000:.1f} ms" + (f", LLM 判定 {ev.judge_calls} 回" if ev.judge_calls else "")
    )


@eval_app.command("answers")
def eval_answers(
    data_dir: Path = typer.Argument(..., help="corpus.jsonl と queries.jsonl のあるフォルダ。"),
    mode: str = typer.Option("auto", "--mode", help="auto | retrieve | long-context"),
    limit: Optional[int] = typer.Option(30, "--limit", help="評価する質問の数 (全体から均等に選ぶ)。"),
    backend: Optional[str] = typer.Option(None, "--backend", help="embedded | ollama | openai | extractive"),
    unanswerable_from: Optional[Path] = typer.Option(
        None, "--unanswerable-from",
        help="別のデータセットのフォルダ。その質問 (答えがこの資料にないもの) に「分かりません」と答える割合を測る。",
    ),
    unanswerable_limit: Optional[int] = typer.Option(
        None, "--unanswerable-limit", help="答えのない質問の数 (均等に選ぶ。既定: --limit と同じ)。"
    ),
    docs: Optional[int] = typer.Option(
        None, "--docs", min=1,
        help="資料をこの数の文書に絞る (均等に選び、正解文書がその中にある質問だけを使う)。"
        "窓に収まる小さなコーパスで長文脈と検索を比べるため。",
    ),
    as_json: bool = JsonOpt,
):
    """回答の正しさ (含有率・文字 F1)、選ばれたモード、読んだトークン数、1 問あたりの秒数を測る。
    --unanswerable-from を付けると、答えが資料にない質問で正直に「分かりません」と答えるかも測る。

    例: rag eval answers ../shared/evaldata/jsquad_v1.3_valid_articles --mode retrieve --limit 30

    例: rag eval answers ../shared/evaldata/jsquad_v1.3_valid_articles --unanswerable-from ../shared/evaldata/jaquad_dev_articles
    """
    from rich.progress import Progress

    from pipeline.evaluation.answers import run_answer_eval
    from pipeline.render import human

    if mode not in ("auto", "retrieve", "long-context"):
        raise typer.BadParameter("auto | retrieve | long-context", param_hint="--mode")
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("質問", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            if bar.disable:  # a log, not a terminal: one line per question
                typer.echo(f"質問 {done}/{total}", err=True)

        report = run_answer_eval(
            _settings(), data_dir, mode=mode, limit=limit, backend=backend, progress=progress,
            unanswerable_from=unanswerable_from,
            unanswerable_limit=unanswerable_limit if unanswerable_limit is not None else limit, docs=docs,
        )
    if as_json:
        _echo_json(report)
        return
    typer.echo(
        f"{data_dir}: {report['n_queries']} 問, backend {report['backend']}, mode {mode}\n"
        f"  含有率 {report['contains']} (短い回答 {report['contains_short']})  "
        f"文字F1 {report['char_f1']} (短い回答; 文全体 {report['char_f1_sentence']})  正解文書を引用 {report['cited_gold_doc']}\n"
        f"  引用 再現率 {report['citation_recall']} / 適合率 {report['citation_precision']}\n"
        f"  モード {human(report['modes'])}  読んだトークン平均 {report['tokens_read_mean']}  "
        f"1 問 {report['seconds_per_question']} 秒\n"
        f"  「分かりません」と答えた割合 {report['refusal_rate']} (答えのある質問で)"
    )
    if (u := report["unanswerable"]) is not None:
        typer.echo(
            f"  答えのない質問 {u['n_queries']} 問: 「分かりません」と答えた割合 {u['refusal_rate']} "
            f"(候補 {u['candidates']} 問のうち、正解が資料にあるため除外 {u['dropped_as_answerable']} 問)"
        )


@eval_app.command("retrieval")
def eval_retrieval(
    data_dir: Path = typer.Argument(..., help="corpus.jsonl と queries.jsonl のあるフォルダ。"),
    retriever: str = typer.Option("all", "--retriever", help="bm25 | dense | hybrid | all"),
    limit: Optional[int] = typer.Option(None, "--limit", help="質問を N 問だけ使う (全体から等間隔に選ぶ)。"),
    fusion: Optional[List[str]] = typer.Option(
        None, "--fusion", help="hybrid の融合方式を追加で比べる (anchored | rrf | zscore | minmax、繰り返し可)。"
    ),
    rerank: bool = typer.Option(
        False, "--rerank", help="hybrid+rerank (再順位付けモデルで上位候補を並べ直す) も測る。既定で --split heldout。"
    ),
    split: Optional[str] = typer.Option(
        None, "--split", help="heldout | val | train: その記事の質問だけを使う (再順位付けモデルの学習の分け方)。"
    ),
    as_json: bool = JsonOpt,
):
    """検索の評価: コーパスを本番と同じ読み込み・分割・索引で (キャッシュに) 索引し、
    Recall@1/5/10、MRR@10、nDCG@10、検索時間 p50/p95 を測る (文書は最良のチャンクの順位)。

    例: rag eval retrieval ../shared/evaldata/jsquad_v1.3_valid --retriever all --limit 300 --json
    例: rag eval retrieval ../shared/evaldata/jaquad_dev --rerank --limit 200   (学習に使っていない記事の質問)
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.evaluation.retrieval import ALL_RETRIEVERS, evaluate_retrieval
    from pipeline.index.fusion import FUSIONS

    if retriever not in (*ALL_RETRIEVERS, "all"):
        raise typer.BadParameter("bm25 | dense | hybrid | all のどれかを指定してください", param_hint="--retriever")
    for f in fusion or []:
        if f not in FUSIONS:
            raise typer.BadParameter(" | ".join(sorted(FUSIONS)) + " のどれかを指定してください", param_hint="--fusion")

    class _Bar:
        """Indexing and querying progress on stderr (stdout keeps only the result)."""

        def __init__(self):
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty(),
            )
            self.task = None

        def start(self, label: str, total: int) -> None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task({"indexing": "索引作成"}.get(label, f"検索 {label}"), total=total)
            if self.progress.disable:
                typer.echo(f"{label}: {total}", err=True)

        def advance(self) -> None:
            self.progress.advance(self.task)

        def log(self, message: str) -> None:
            self.progress.console.log(message)

    if split not in (None, "heldout", "val", "train"):
        raise typer.BadParameter("heldout | val | train のどれかを指定してください", param_hint="--split")
    bar = _Bar()
    with bar.progress:
        report = evaluate_retrieval(
            data_dir, _settings(), retrievers=ALL_RETRIEVERS if retriever == "all" else (retriever,),
            limit=limit, progress=bar, fusions=tuple(fusion or ()), rerank=rerank,
            split=split or ("heldout" if rerank else None),
        )
    if as_json:
        _echo_json(report.to_dict())
        return
    cached = " (キャッシュを再利用)" if report.index_cached else ""
    if report.split:
        typer.echo(f"質問: 記事の分割 {report.split} のみ")
    typer.echo(
        f"{report.dataset}: {report.n_docs} 文書, {report.n_chunks} チャンク, {report.n_queries} 問, "
        f"索引作成 {report.indexing_s:.1f} 秒 (新たに埋め込み {report.vectors_computed} チャンク){cached}"
    )
    typer.echo(f"{'':16}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MRR@10':>8}{'nDCG@10':>9}{'p50 ms':>9}{'p95 ms':>9}")
    for name, m in report.retrievers.items():
        typer.echo(
            f"{name:16}{m['recall@1']:8.4f}{m['recall@5']:8.4f}{m['recall@10']:8.4f}{m['mrr@10']:8.4f}"
            f"{m['ndcg@10']:9.4f}{m['latency_ms_p50']:9.1f}{m['latency_ms_p95']:9.1f}"
        )
    for s in report.skipped_docs:
        typer.echo(f"  読めなかった文書: {s['doc_id']}: {s['reason']}", err=True)


@app.command()
def config(index: Optional[Path] = IndexOpt, as_json: bool = JsonOpt):
    """実際に使われる設定と、それぞれの出どころ (既定値 / rag.toml / 環境変数 / コマンドライン) を表示する。

    1 行に 1 つ「キー = 値  # 出どころ」の形で。設定の誤り (未知のキー、使えない値) は終了コード 2 で報告する。

    例: rag config
    例: RAG_TOP_K=8 rag config --index indexes/demo --json
    """
    from pipeline.settings import describe_settings

    values = describe_settings(index_dir=str(index) if index else None)
    if as_json:
        _echo_json([v.to_dict() for v in values])
        return
    width = max(len(v.key) for v in values)
    for v in values:
        shown = "未設定" if v.value is None else json.dumps(v.value, ensure_ascii=False)
        typer.echo(f"{v.key:<{width}} = {shown}  # {v.source}")


MAX_CRASH_LOGS = 20  # older crash logs are deleted


def _crash_log(err: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to `<cache_dir>/logs/` (a temp folder
    when that cannot be written); the path, or None when nothing could be written."""
    import tempfile
    import traceback

    from pipeline.settings import default_cache_dir, load_settings

    try:
        logs = load_settings().cache_dir / "logs"
    except Exception:  # noqa: BLE001 - the settings may be what failed
        logs = default_cache_dir() / "logs"
    text = (
        time.strftime("%Y-%m-%dT%H:%M:%S%z") + f" rag: {' '.join(sys.argv[1:])}\n"
        f"python {sys.version.split()[0]}, cwd {os.getcwd()}\n\n"
        + "".join(traceback.format_exception(err))
    )
    name = time.strftime("rag-%Y%m%d-%H%M%S") + f"-{os.getpid()}.log"
    for folder in (logs, Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
        except OSError:
            continue
        for old in sorted(folder.glob("rag-*.log"))[:-MAX_CRASH_LOGS]:
            old.unlink(missing_ok=True)
        return folder / name
    return None


def main() -> None:
    """Entry point, the one wrapper: a library error becomes its message and exit code;
    any other error one line naming a log file that holds the traceback (exit 1)."""
    try:
        code = app(standalone_mode=False)  # typer turns Ctrl-C into 130 and returns it
    except RagError as err:
        typer.echo(f"エラー: {err}", err=True)
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except typer.TyperException as err:  # usage errors (typer's own click) carry their exit code
        err.show() if hasattr(err, "show") else typer.echo(f"エラー: {err}", err=True)
        sys.exit(err.exit_code)
    except BrokenPipeError:  # `rag search … | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as err:
        log = _crash_log(err)
        detail = " ".join(str(err).split())[:300]
        where = f"詳細: {log}" if log else "詳細をログに書けませんでした"
        typer.echo(f"予期しないエラーが起きました: {type(err).__name__}: {detail}。{where}", err=True)
        sys.exit(1)
    if code == 130:
        typer.echo("中断しました。", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
