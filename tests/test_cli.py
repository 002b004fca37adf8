"""The CLI face: every command has help with an example, and imports stay light."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import app

HEAVY = ("torch", "sentence_transformers", "chromadb", "llama_cpp", "fugashi", "transformers", "llama_index")


def test_importing_the_cli_loads_no_heavy_library():
    code = "import sys, pipeline.cli; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _commands(typer_app, prefix=""):
    import typer.main

    group = typer.main.get_command(typer_app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            for sub_name, sub in cmd.commands.items():
                yield f"{prefix}{name} {sub_name}", sub
        else:
            yield prefix + name, cmd


@pytest.mark.parametrize("name,cmd", list(_commands(app)))
def test_every_command_has_help_with_an_example(name, cmd):
    assert cmd.help and "例: rag " in cmd.help, name


def test_missing_index_exits_3_with_a_japanese_message(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "search", "質問", "--index", str(tmp_path / "none")],
        capture_output=True, text=True,
    )
    assert out.returncode == 3
    assert "rag ingest" in out.stderr


# ------------------------------------------------------------ the one wrapper (main)


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`rag ARGS` through `main()`, in-process: (exit code, stderr)."""
    from pipeline import cli

    monkeypatch.setattr(sys, "argv", ["rag", *args])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_a_log(no_user_config, monkeypatch, capsys):
    import pipeline.ingest.status

    def broken(settings):
        raise RuntimeError("壊れた\n二行目")

    monkeypatch.setenv("RAG_CACHE_DIR", str(no_user_config / "cache"))
    monkeypatch.setattr(pipeline.ingest.status, "index_status", broken)
    code, err = run_main(monkeypatch, capsys, "status")
    assert code == 1
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("予期しないエラーが起きました: RuntimeError: 壊れた 二行目。詳細: ")
    log = Path(line.split("詳細: ", 1)[1])
    assert log.parent == no_user_config / "cache" / "logs"
    text = log.read_text("utf-8")
    assert "Traceback" in text and "RuntimeError: 壊れた" in text and "in broken" in text


def test_a_crash_log_goes_to_a_temp_folder_when_the_cache_cannot_be_written(no_user_config, monkeypatch, capsys):
    import tempfile

    import pipeline.ingest.status

    (no_user_config / "file").write_text("not a folder")
    monkeypatch.setenv("RAG_CACHE_DIR", str(no_user_config / "file"))
    monkeypatch.setattr(tempfile, "tempdir", str(no_user_config / "tmp"))
    (no_user_config / "tmp").mkdir()
    monkeypatch.setattr(pipeline.ingest.status, "index_status", lambda s: 1 / 0)
    code, err = run_main(monkeypatch, capsys, "status")
    assert code == 1
    log = Path(err.strip().split("詳細: ", 1)[1])
    assert log.parent == no_user_config / "tmp" and "ZeroDivisionError" in log.read_text("utf-8")


def test_interrupting_a_command_exits_130(no_user_config, monkeypatch, capsys):
    import pipeline.ingest.status

    def interrupted(settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.ingest.status, "index_status", interrupted)
    code, err = run_main(monkeypatch, capsys, "status")
    assert code == 130 and "中断しました" in err and "Traceback" not in err


def test_a_bad_setting_exits_2_through_the_wrapper(no_user_config, monkeypatch, capsys):
    (no_user_config / "rag.toml").write_text('citation_policy = "silent"\n', "utf-8")
    code, err = run_main(monkeypatch, capsys, "config")
    assert code == 2
    assert err.strip() == 'エラー: rag.toml: citation_policy = "silent" は使えません。使える値: annotate, strip, refuse'


def test_a_usage_error_is_clicks_message_and_exit_2_not_a_crash(no_user_config, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "search", "質問", "--retriever", "fuzzy")
    assert code == 2
    assert "bm25 | dense | hybrid" in err and "予期しない" not in err and "Traceback" not in err


# ------------------------------------------------------------ a one-shot search, fresh interpreter

# A question typed once should not wait for these: the embedded model runs on onnxruntime
# (pipeline.models.e5_onnx) and dense search reads the snapshot's vectors, not Chroma.
NOT_ON_THE_QUERY_PATH = ("torch", "transformers", "sentence_transformers", "llama_index", "chromadb")

_SEARCH_AND_LIST_MODULES = """
import json, sys
from pipeline import cli
sys.argv = ["rag", "search", *sys.argv[1:], "--json"]
try:
    cli.main()
except SystemExit as exit_:
    if exit_.code:
        raise
print("MODULES " + json.dumps(sorted(m for m in %r if m in sys.modules)))
""" % (NOT_ON_THE_QUERY_PATH,)


def search_in_fresh_interpreter(index_dir: Path, question: str, k: int, env: dict[str, str]):
    """`rag search QUESTION -k K --index INDEX_DIR --json` in a new Python: (hits, heavy modules loaded)."""
    import json
    import os

    out = subprocess.run(
        [sys.executable, "-c", _SEARCH_AND_LIST_MODULES, question, "-k", str(k), "--index", str(index_dir)],
        capture_output=True, text=True, env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    body, _, modules = out.stdout.rpartition("MODULES ")
    return json.loads(body), json.loads(modules)


def _where(rows):
    """(file, start, end) of each hit: `rag search --json` rows (paths shown relative to the
    working directory) or ScoredChunks."""
    if rows and isinstance(rows[0], dict):
        return [(Path(r["path"]).resolve(), r["start"], r["end"]) for r in rows]
    return [(Path(h.chunk.path).resolve(), h.chunk.start, h.chunk.end) for h in rows]


def test_a_one_shot_search_loads_no_torch_transformers_llama_index_or_chroma(no_user_config, notes):
    from pipeline.index.search import search
    from pipeline.index.snapshot import open_index
    from pipeline.ingest.sync import Ingestor
    from tests.conftest import hash_settings

    settings = hash_settings(no_user_config / "index")
    Ingestor(settings, Path(settings.index_dir)).run([notes])
    question = "Ollamaの既定のポートは？"
    hits, loaded = search_in_fresh_interpreter(
        Path(settings.index_dir), question, 3, {"RAG_EMBED_MODEL": "hash:256", "RAG_CHUNK_TOKENS": "120"}
    )
    assert loaded == []
    want = search(open_index(settings), question, k=3)
    assert hits and _where(hits) == _where(want)
    assert Path(hits[0]["path"]).name == "ollama.md"


@pytest.mark.slow
def test_a_one_shot_search_with_the_embedded_model_finds_what_the_torch_path_finds(no_user_config, notes):
    """An index embedded on torch (as every index before the ONNX export was), searched once
    from a fresh interpreter: no torch loaded, the torch path's chunks and scores."""
    from pipeline.index.embedder import SentenceTransformerEmbedder
    from pipeline.index.search import search
    from pipeline.index.snapshot import open_index
    from pipeline.ingest.sync import Ingestor
    from pipeline.models.e5 import embedded_e5_path
    from pipeline.models.e5_onnx import open_encoder
    from pipeline.settings import Settings

    settings = Settings(index_dir=str(no_user_config / "index"))
    # The steady state `models prepare` leaves: a stale export would be redone (and checked
    # against torch) by the first search, which then rightly loads torch.
    open_encoder(embedded_e5_path(settings.cache_dir))
    torch_embedder = SentenceTransformerEmbedder(settings)
    Ingestor(settings, Path(settings.index_dir), embedder=torch_embedder).run([notes])
    for question in ("Ollamaの既定のポートは？", "７Ｂモデルに必要なメモリは？"):
        hits, loaded = search_in_fresh_interpreter(Path(settings.index_dir), question, 3, {})
        assert loaded == []
        want = search(open_index(settings, embedder=torch_embedder), question, k=3)
        assert hits and _where(hits) == _where(want)
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in want], abs=1e-4)


# ------------------------------------------------------------ what a person reads

ANSI = r"\x1b\[[0-9;]*m"


def invoke(*args: str, columns: int = 200) -> str:
    """`rag ARGS` in-process; its stdout without colour codes (exit 0 asserted)."""
    import re

    from typer.testing import CliRunner

    out = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    assert out.exit_code == 0, (out.output, out.exception)
    return re.sub(ANSI, "", out.stdout)


def test_help_shows_the_brackets_a_docstring_writes():
    assert "各文の引用 [n] を資料と照合" in invoke("--help")
    assert "各文の引用 [n] を資料と照合" in invoke("ask", "--help")


@pytest.mark.parametrize("name,cmd", list(_commands(app)))
def test_no_bracket_of_any_help_text_is_eaten_as_markup(name, cmd):
    import re

    texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    brackets = {b.replace("\\[", "[") for t in texts for b in re.findall(r"\\?\[[^\]\s]*\]", t)}
    shown = invoke(*name.split(), "--help")
    assert all(b in shown for b in brackets), (name, brackets)


STATUS = {
    "index_dir": "/idx", "generation": 4, "documents": 12, "chunks": 40, "characters": 9000,
    "embedding_tokens": 7000, "llm_tokens_estimated": 6000, "formats": {"org": 5, "text": 7},
    "encodings": {"utf-8": 11, "cp932": 1}, "size_bytes": 2_500_000, "embed_model": "hash:256",
    "chunk_tokens": 120, "llm_backend": "embedded", "long_context_window": 8192, "fits_long_context": True,
    "last_ingest": None, "changed_since_ingest": {"modified": [], "deleted": ["/notes/old.md"], "new": []},
    "prefix_state": {"ready": True, "tokens": 5800},  # a key this renderer has never heard of
}


def test_status_shows_mappings_as_key_value_pairs_not_python_dicts(no_user_config, monkeypatch):
    import json

    import pipeline.ingest.status

    monkeypatch.setattr(pipeline.ingest.status, "index_status", lambda settings: STATUS)
    text = invoke("status")
    assert "形式 text 7・org 5" in text and "文字コード utf-8 11・cp932 1" in text
    assert "prefix_state: ready はい・tokens 5800" in text and "削除: /notes/old.md" in text
    assert "{" not in text and "'" not in text and "True" not in text
    assert json.loads(invoke("status", "--json")) == STATUS


def _answer(**changes) -> dict:
    """`rag ask --json` as the engine writes it, with reasons shaped like the router's."""
    data = {
        "question": "ポートは？", "answer": "11434 です[1]。", "raw_answer": "11434 です[1]。", "evidence": [],
        "mode": "retrieve", "fallback_from": None, "backend": "fake", "refused": False,
        "route": {
            "mode": "retrieve",
            "reasons": [
                "コーパス 12345 トークン（推定） / 使える窓 3000 トークン (窓 4096 − 指示 300 − 回答 256)",
                "長文脈の推定 243.0 秒・0.0000 (予算 30.0 秒・0.0100)、プレフィックスは未キャッシュ",
                "的を絞った質問で検索の確信度も十分 (0.82)、検索モード（答えが見つからなければ長文脈で再試行）",
            ],
            "usable_window": 3000, "corpus_tokens": 12345,
            "estimates": {"retrieve": {"input_tokens": 1930, "seconds": 79.25, "cost": 0.0},
                          "long-context": {"input_tokens": 12645, "seconds": 243.0, "cost": 0.0}},
            "allow_fallback": True, "token_count_estimated": True,
        },
        "sentences": [{"text": "Ollama の既定のポート番号は 11434 で、設定ファイルで変えられます[1]。", "citations": [1],
                       "verdict": "supported", "score": 0.9, "fixed_citations": [1], "reasons": []}],
        "citation_recall": 1.0, "citation_precision": 1.0,
        "sources": [{"number": 1, "path": "notes/ollama.md", "lines": [3, 9], "cited": True}],
        "seconds": 81.5, "tokens_read": 1930, "label": None,
    }
    return {**data, **changes}


def render(data: dict, width: int) -> list[str]:
    import io

    from rich.console import Console

    from pipeline.cli import _render_answer

    out = io.StringIO()
    _render_answer(data, explain=True, console=Console(file=out, width=width))
    return out.getvalue().splitlines()


# Phrases a reader takes in at once: a number with its unit, a word. Never split across lines.
PHRASES = ("未キャッシュ", "243.0 秒", "30.0 秒", "79.25 秒", "12345 トークン", "読むトークン", "確信度", "再試行")


@pytest.mark.parametrize("width", range(36, 61, 2))
def test_explain_fits_the_terminal_and_breaks_between_phrases(width):
    from rich.cells import cell_len

    lines = render(_answer(), width)
    assert max(cell_len(line) for line in lines) <= width
    for phrase in PHRASES:
        assert any(phrase in line for line in lines), (phrase, lines)
    # Nothing lost or reordered: the lines, joined, read as the reasons do.
    joined = "".join(line.strip() for line in lines)
    assert "プレフィックスは未キャッシュ" in joined and "(窓4096−指示300−回答256)" in joined.replace(" ", "")


def test_ask_explain_wraps_at_the_terminals_width(no_user_config, monkeypatch):
    import json
    from types import SimpleNamespace

    import pipeline.api
    from rich.cells import cell_len

    data = _answer()
    answerer = SimpleNamespace(ask=lambda q, mode, policy: SimpleNamespace(to_dict=lambda: data))
    monkeypatch.setattr(pipeline.api, "answerer_for", lambda settings, backend=None: answerer)
    lines = invoke("ask", "ポートは？", "--explain", columns=40).splitlines()
    assert max(cell_len(line) for line in lines) <= 40
    assert any("未キャッシュ" in line for line in lines) and any("243.0 秒" in line for line in lines)
    assert json.loads(invoke("ask", "ポートは？", "--json")) == data  # --json keeps every key


def test_the_short_answer_is_printed_first_with_its_citation():
    sentence = "Ollama の既定のポート番号は 11434 です[1]。"
    sentences = [{"text": sentence, "citations": [1], "verdict": "supported", "score": 0.9,
                  "fixed_citations": [1], "reasons": []}]
    lines = render(_answer(short_answer="11434", sentences=sentences), 80)
    first = lines.index(next(line for line in lines if line.startswith("回答")))
    assert lines[first + 1].strip() == "11434 [1]"
    assert lines[first + 2].strip() == sentence  # the checked sentence stays under it
    # A short answer that is the whole sentence is not printed twice.
    lines = render(_answer(short_answer=sentence.replace("[1]", ""), sentences=sentences), 80)
    assert sum("11434" in line for line in lines) == 1


def test_note_text_with_markup_prints_literally_in_ask_and_search(no_user_config, monkeypatch):
    import pipeline.index.search
    import pipeline.index.snapshot
    from pipeline.documents import Chunk, ScoredChunk

    literal = "[bold]x[/bold] と [link] は書いたとおりに"
    data = _answer(label="[red]注意[/red]", sources=[{"number": 1, "path": "notes/[draft].md", "lines": [1, 2], "cited": True}],
                   sentences=[{"text": literal + "[1]。", "citations": [1], "verdict": "unsupported",
                               "score": 0.1, "fixed_citations": [], "reasons": []}])
    shown = "\n".join(render(data, 120))
    assert literal + "[1]。 (資料で裏付けられない)" in shown
    assert "[red]注意[/red]" in shown and "[1] notes/[draft].md:1-2" in shown

    chunk = Chunk(id="c1", path=str(no_user_config / "a.md"), text=literal, start=0, end=len(literal),
                  line_start=1, line_end=1)
    monkeypatch.setattr(pipeline.index.snapshot, "open_index", lambda settings: None)
    monkeypatch.setattr(pipeline.index.search, "search", lambda index, q, k, retriever: [ScoredChunk(chunk, 0.5)])
    shown = invoke("search", "質問")
    assert literal in shown and "[1] a.md:1" in shown and "{" not in shown


# Where a line may end in Japanese text (| marks each allowed break).
PHRASE_TESTS = [
    "的を|絞った|質問で|検索の|確信度も|十分",
    "プレフィックスは|未キャッシュ",
    "推定 243.0 秒・|0.0000 |(予算 30.0 秒)",
    "検索モードの|回答が|「分かりません」だったため|長文脈で|再試行",
    "Ollama の|既定の|ポート番号は |11434 で、|設定ファイルで|変えられます[1]。",
    "Self-Route を|使う",
]


@pytest.mark.parametrize("marked", PHRASE_TESTS)
def test_japanese_text_breaks_only_between_phrases(marked):
    from pipeline.render import phrase_units

    text = marked.replace("|", "")
    assert "|".join(text[a:b] for a, b in phrase_units(text)) == marked


def test_a_phrase_wider_than_the_line_is_split_without_breaking_kinsoku():
    from rich.cells import cell_len

    from pipeline.render import wrap

    lines = [t.plain for t in wrap("「分かりません」だったため、プレフィックスは未キャッシュ。", 10, indent="  ")]
    assert all(cell_len(line) <= 10 for line in lines)
    assert not any(line.rstrip().endswith("「") or line.lstrip().startswith(("」", "、", "。", "ー", "ッ"))
                   for line in lines), lines
    assert "".join(line.strip() for line in lines) == "「分かりません」だったため、プレフィックスは未キャッシュ。"


def test_a_refusal_prints_its_reason_once_and_cites_nothing():
    reason = "(資料に「アラン」「ロベール」が出てこないため回答しません)"
    data = _answer(answer=f"{reason}\n資料からは分かりません。", raw_answer="資料からは分かりません。", sentences=[],
                   label=reason, citation_recall=None, citation_precision=None,
                   sources=[{"number": 1, "path": "notes/ollama.md", "lines": [3, 9], "cited": False}])
    text = "\n".join(render(data, 80))
    assert text.count("アラン") == 1  # the reason once, not again inside the answer
    assert "資料からは分かりません。" in text
    assert "読んだ資料 (引用なし)" in text and "\n出典" not in text
