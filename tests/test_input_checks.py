"""Input checks at the edge: what a command cannot use is refused with a message (exit 2),
in the library (so the Python API refuses it too) before anything loads."""

from __future__ import annotations

import pytest

from pipeline import api
from pipeline.errors import InvalidInput
from pipeline.evaluation.citations import load_pairs
from pipeline.evaluation.datasets import spread
from pipeline.index.search import MAX_QUESTION_CHARS
from pipeline.ingest.sync import Ingestor
from tests.conftest import hash_settings
from tests.test_corruption import rag  # noqa: F401 (the in-process CLI fixture)


@pytest.fixture
def indexed(fresh_index, notes):
    Ingestor(fresh_index, fresh_index.index_dir).run([notes])
    return fresh_index


@pytest.mark.parametrize("question", ["", "   ", "\u3000\n", "あ" * (MAX_QUESTION_CHARS + 1)])
def test_search_refuses_an_empty_or_over_long_question(question, indexed):
    with pytest.raises(InvalidInput, match="質問が"):
        api.search(question, settings=indexed)


def test_a_question_of_the_stated_maximum_is_answered(indexed):
    assert api.search("量子化" + "あ" * (MAX_QUESTION_CHARS - 3), settings=indexed, retriever="bm25")


@pytest.mark.parametrize("k", [0, -1])
def test_search_refuses_k_below_one(k, indexed):
    with pytest.raises(InvalidInput, match="-k"):
        api.search("量子化", k=k, settings=indexed)


def test_ask_refuses_an_empty_question(indexed):
    with pytest.raises(InvalidInput, match="質問が空です"):
        api.ask("  ", backend="extractive", settings=indexed)


def test_a_negative_limit_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="--limit"):
        spread([1, 2, 3], -1)
    (tmp_path / "pairs.jsonl").write_text("", "utf-8")
    with pytest.raises(InvalidInput, match="--limit"):
        load_pairs(tmp_path, limit=-2)
    assert spread([1, 2, 3], 0) == []


def test_an_index_path_that_is_a_file_is_refused(tmp_path, notes):
    file = tmp_path / "index.txt"
    file.write_text("not an index", "utf-8")
    settings = hash_settings(file)
    with pytest.raises(InvalidInput, match="ファイルです"):
        api.search("量子化", settings=settings)
    with pytest.raises(InvalidInput, match="ファイルです"):
        Ingestor(settings, file).run([notes])
    with pytest.raises(InvalidInput, match="ファイルです"):
        api.status(settings=settings)
    assert file.read_text("utf-8") == "not an index"


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", ""], "質問が空です"),
        (["search", "  "], "質問が空です"),
        (["ask", ""], "質問が空です"),
        (["ask", "あ" * (MAX_QUESTION_CHARS + 1)], "質問が長すぎます"),
        (["search", "量子化", "-k", "0"], "1 以上"),
        (["search", "量子化", "-k", "-2"], "1 以上"),
    ],
)
def test_cli_exits_2_with_a_message_for_unusable_input(args, message, rag, indexed):  # noqa: F811
    code, out, err = rag(*args, "--index", indexed.index_dir)
    assert code == 2, err
    assert message in err and out == ""


def test_cli_exits_2_for_an_index_path_that_is_a_file_and_a_negative_limit(rag, tmp_path, notes):  # noqa: F811
    file = tmp_path / "index.txt"
    file.write_text("x", "utf-8")
    for args in (["search", "量子化"], ["status"], ["ingest", str(notes)]):
        code, _, err = rag(*args, "--index", file)
        assert code == 2 and "ファイルです" in err, (args, err)
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "pairs.jsonl").write_text("", "utf-8")
    code, _, err = rag("eval", "citations", tmp_path / "pairs", "--limit", "-1", "--no-embedder")
    assert code == 2 and "--limit" in err, err
