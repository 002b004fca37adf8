"""Long context that the cron job pays for: `rag ingest` saves the corpus's prefix state, `rag ask`
uses it, and a changed corpus names a new state while the old one is deleted."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.answer.backends.base import FAKE_INFO, FakeBackend
from pipeline.answer.engine import Answerer
from pipeline.api import prepare_long_context
from pipeline.errors import ModelUnavailable
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import hash_settings, run_main

QUESTION = "Ollamaの既定のポートは？"
UNKNOWN = "回答: 資料からは分かりません。"


class StatefulFake(FakeBackend):
    """A FakeBackend that saves prefix states on disk as the embedded backend does
    (``key.bin`` + ``key.json``) and records what it read and with which key."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prepared: list[str] = []  # keys, one per prefix actually read
        self.cache_keys: list[str | None] = []

    def prepare_prefix(self, prefix: str, key: str, state_dir) -> None:
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.prepared.append(key)
        (state_dir / f"{key}.bin").write_text(prefix, "utf-8")
        (state_dir / f"{key}.json").write_text(json.dumps({"tokens": self.count_tokens(prefix)}), "utf-8")

    def complete(self, prompt: str, *, prefix_cache_key: str | None = None, **kw):
        self.cache_keys.append(prefix_cache_key)
        return super().complete(prompt, prefix_cache_key=prefix_cache_key, **kw)


def stateful(**info) -> StatefulFake:
    return StatefulFake(lambda p: UNKNOWN, info=replace(FAKE_INFO, supports_prefix_cache=True, **info))


@pytest.fixture
def indexed(tmp_path, notes):
    """Settings of an index over `notes`, ingested once (no state prepared yet)."""
    settings = hash_settings(tmp_path / "idx", top_k=2)
    Ingestor(settings, Path(settings.index_dir)).run([notes])
    return settings


def state_files(settings) -> list[str]:
    d = Path(settings.index_dir) / "kv-cache"
    return sorted(p.name for p in d.glob("*.bin")) if d.is_dir() else []


def answerer(settings, backend) -> Answerer:
    return Answerer(settings, open_index(settings), backend)


def test_ingest_prepares_the_state_and_ask_reads_only_the_question(indexed):
    fake = stateful()
    report = prepare_long_context(settings=indexed, backend=fake)
    assert report.status == "prepared", report.message
    assert state_files(indexed) == [f"{report.key}.bin"] and fake.prepared == [report.key]
    assert report.corpus_tokens and report.corpus_tokens <= report.usable_window

    a = answerer(indexed, fake)
    route, _, _ = a.route(QUESTION)
    assert any("プレフィックスはキャッシュ済み" in r for r in route.reasons)
    # Only the question is read fresh: the rules and the corpus come from the saved state.
    from pipeline.answer.prompts import build_prompt

    fresh = route.estimates["long-context"].input_tokens
    assert fresh == fake.count_tokens(build_prompt("", QUESTION).user()) < a.prompt_tokens(QUESTION)
    answer = a.ask(QUESTION, mode="long-context")
    assert answer.mode == "long-context" and fake.cache_keys == [report.key]


def test_an_unchanged_corpus_finds_its_state_without_reading_it_again(indexed, notes):
    fake = stateful()
    first = prepare_long_context(settings=indexed, backend=fake)
    Ingestor(indexed, Path(indexed.index_dir)).run([notes])
    again = prepare_long_context(settings=indexed, backend=fake)
    assert again.status == "ready" and again.key == first.key
    assert fake.prepared == [first.key] and again.corpus_tokens is None  # not even counted


def test_a_changed_note_names_a_new_state_and_the_old_one_is_deleted(indexed, notes):
    fake = stateful()
    old = prepare_long_context(settings=indexed, backend=fake).key
    (notes / "ollama.md").write_text("# Ollama\n\nOllamaの既定のポートは11435に変わった。\n", "utf-8")
    Ingestor(indexed, Path(indexed.index_dir)).run([notes])

    # Until the next preparation the old state is not taken for the new corpus.
    a = answerer(indexed, fake)
    route, _, _ = a.route(QUESTION)
    assert any("プレフィックスは未キャッシュ（rag ingest で準備できます）" in r for r in route.reasons)
    assert route.estimates["long-context"].input_tokens == a.prompt_tokens(QUESTION) + route.corpus_tokens

    new = prepare_long_context(settings=indexed, backend=fake)
    assert new.status == "prepared" and new.key != old and new.pruned == 1
    assert state_files(indexed) == [f"{new.key}.bin"]
    assert not (Path(indexed.index_dir) / "kv-cache" / f"{old}.json").exists()


def test_changed_rules_name_a_new_state_too(indexed, monkeypatch):
    import pipeline.answer.prompts as prompts

    fake = stateful()
    old = prepare_long_context(settings=indexed, backend=fake).key
    monkeypatch.setattr(prompts, "SYSTEM", prompts.SYSTEM + "\n敬体で答える。")
    assert answerer(indexed, fake).corpus_prefix_key() != old


def test_a_corpus_grown_past_the_window_is_not_prepared_and_old_states_go(indexed, notes):
    prepare_long_context(settings=indexed, backend=stateful())
    (notes / "more.md").write_text("# 追記\n\n" + "長いメモの続きです。" * 20 + "\n", "utf-8")
    Ingestor(indexed, Path(indexed.index_dir)).run([notes])
    probe = answerer(indexed, stateful())
    small = probe.corpus_tokens() + probe.prompt_tokens("") + indexed.answer_tokens  # no room for a question
    fake = stateful(context_window=small)
    report = prepare_long_context(settings=indexed, backend=fake)
    assert report.status == "skipped" and "窓に入らない" in report.message
    assert f"{report.corpus_tokens} トークン > 使える窓 {report.usable_window} トークン" in report.message
    assert fake.prepared == [] and state_files(indexed) == []


@pytest.mark.parametrize(
    "info, why",
    [
        (replace(FAKE_INFO, generative=False), "LLM を使わない"),
        (replace(FAKE_INFO, supports_prefix_cache=False), "保存できない"),
    ],
)
def test_a_backend_that_cannot_save_states_is_skipped_with_the_reason(indexed, info, why):
    report = prepare_long_context(settings=indexed, backend=FakeBackend(str, info=info))
    assert report.status == "skipped" and why in report.message and state_files(indexed) == []


def test_a_server_that_caches_prefixes_itself_needs_no_preparation(indexed):
    server = FakeBackend(str, info=replace(FAKE_INFO, supports_prefix_cache=True))  # no prepare_prefix
    report = prepare_long_context(settings=indexed, backend=server)
    assert report.status == "skipped" and "キャッシュする" in report.message


def test_the_embedded_backend_finds_a_ready_state_without_loading_the_model(indexed, tmp_path):
    from pipeline.answer.backends.llama_cpp import STATE_FORMAT, EmbeddedBackend

    backend = EmbeddedBackend(indexed.model_copy(update={"cache_dir": tmp_path / "cache"}))
    key = answerer(indexed, backend).corpus_prefix_key()
    state_dir = Path(indexed.index_dir) / "kv-cache"
    state_dir.mkdir()
    (state_dir / f"{key}.bin").write_bytes(b"state")
    (state_dir / f"{key}.json").write_text(json.dumps({"format": STATE_FORMAT, "model": backend._model_id()}))
    (state_dir / "0ld.bin").write_bytes(b"old corpus")

    report = prepare_long_context(settings=indexed, backend=backend)
    assert report.status == "ready" and report.key == key and report.pruned == 1
    assert backend._llm is None and backend._vocab is None  # no weights, no vocabulary
    # A state saved with another model is not ready.
    (state_dir / f"{key}.json").write_text(json.dumps({"format": STATE_FORMAT, "model": "other.gguf:1"}))
    assert not backend.has_prefix_state(key, state_dir)


def test_pruning_keeps_the_current_state_and_a_save_in_progress(tmp_path):
    import os
    import time

    from pipeline.answer.backends.llama_cpp import STALE_TMP_S, prune_prefix_states

    for name in ("current.bin", "current.json", "old.bin", "old.json", "orphan.json"):
        (tmp_path / name).write_text("x")
    killed, saving = tmp_path / ".old2.bin.123.tmp", tmp_path / ".next.bin.456.tmp"
    killed.write_text("half")
    saving.write_text("half")
    past = time.time() - STALE_TMP_S - 60
    os.utime(killed, (past, past))
    assert prune_prefix_states(tmp_path, {"current"}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [saving.name, "current.bin", "current.json"]


# ------------------------------------------------------------------ the CLI face


@pytest.fixture
def rag(monkeypatch, capsys, no_user_config):
    """`rag ARGS` in this process, with `backend` standing in for the LLM: (exit code, stdout, stderr)."""
    import pipeline.answer.backends

    monkeypatch.setenv("RAG_EMBED_MODEL", "hash:256")
    monkeypatch.setenv("RAG_CHUNK_TOKENS", "120")
    state = {"backend": stateful()}
    monkeypatch.setattr(pipeline.answer.backends, "load_backend", lambda settings, name=None: state["backend"])

    def run(*args, backend=None) -> tuple[int, str, str]:
        if backend is not None:
            state["backend"] = backend
        return run_main(monkeypatch, capsys, *args)

    return run


def test_rag_ingest_prepares_and_says_so_in_its_json(rag, notes, tmp_path):
    index = tmp_path / "index"
    code, out, err = rag("ingest", notes, "--index", index, "--json")
    assert code == 0, err
    prefix = json.loads(out)["prefix"]
    assert prefix["status"] == "prepared" and (index / "kv-cache" / f"{prefix['key']}.bin").exists()
    code, out, err = rag("ingest", notes, "--index", index)
    assert code == 0 and "長文脈は準備済み" in out


def test_rag_ask_explain_says_the_prefix_is_ready(rag, notes, tmp_path, monkeypatch):
    import pipeline.api

    index = tmp_path / "index"
    fake = stateful()
    assert rag("ingest", notes, "--index", index, "--quiet", backend=fake)[0] == 0
    monkeypatch.setattr(pipeline.api, "answerer_for", lambda settings, backend=None: answerer(settings, fake))
    code, out, err = rag("ask", "メモのツールをすべて挙げて", "--index", index, "--explain")
    assert code == 0, err
    text = out.replace("\n", "").replace(" ", "")
    assert "プレフィックスはキャッシュ済み" in text and "モードlong-context" in text


def test_no_prefix_writes_no_state(rag, notes, tmp_path):
    index = tmp_path / "index"
    code, out, err = rag("ingest", notes, "--index", index, "--json", "--no-prefix")
    assert code == 0, err
    assert json.loads(out)["prefix"] is None and not (index / "kv-cache").exists()


class MissingModel(StatefulFake):
    def prepare_prefix(self, prefix, key, state_dir):
        raise ModelUnavailable("LLM のモデルファイルがありません: /nowhere/model.gguf")


def test_a_missing_model_warns_but_the_ingest_succeeds(rag, notes, tmp_path):
    index = tmp_path / "index"
    broken = MissingModel(str, info=replace(FAKE_INFO, supports_prefix_cache=True))
    code, out, err = rag("ingest", notes, "--index", index, "--json", backend=broken)
    assert code == 0
    assert "警告: 長文脈の準備に失敗しました" in err and "モデルファイルがありません" in err
    data = json.loads(out)
    assert data["added"] == 3 and data["prefix"]["status"] == "failed"
    # --quiet: still the one line, which carries the failure.
    (notes / "new.md").write_text("# 新しいメモ\n\n追加した。\n", "utf-8")
    code, out, err = rag("ingest", notes, "--index", index, "--quiet", backend=broken)
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rag-ingest ")
    line = json.loads(lines[0][len("rag-ingest "):])
    assert line["status"] == "ok" and line["prefix"]["status"] == "failed"


def test_an_unexpected_error_in_preparation_is_logged_and_the_ingest_succeeds(rag, notes, tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))

    class Buggy(StatefulFake):
        def prepare_prefix(self, prefix, key, state_dir):
            raise ZeroDivisionError("division by zero")

    buggy = Buggy(str, info=replace(FAKE_INFO, supports_prefix_cache=True))
    code, out, err = rag("ingest", notes, "--index", tmp_path / "index", backend=buggy)
    assert code == 0 and "ZeroDivisionError" in err and "詳細:" in err
    assert list((tmp_path / "cache" / "logs").glob("rag-*.log"))


# ------------------------------------------------------------- the real model


@pytest.mark.slow
def test_the_embedded_model_answers_from_the_prepared_state(tmp_path):
    from pipeline.answer.backends.llama_cpp import EmbeddedBackend
    from pipeline.models.gguf import prepare_gguf
    from pipeline.settings import default_cache_dir

    try:
        gguf = prepare_gguf(default_cache_dir())
    except Exception as err:  # noqa: BLE001 - parts not installed here
        pytest.skip(f"embedded GGUF unavailable: {err}")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ollama.md").write_text("# Ollama\n\nOllamaの既定のポートは11434です。\n", "utf-8")
    (notes / "rag.md").write_text("# RAG\n\nRAGは検索した文書を根拠にして回答する手法です。\n", "utf-8")
    # A cache of its own: the speed measured by the preparation stays out of the user's cache.
    settings = hash_settings(
        tmp_path / "idx", cache_dir=tmp_path / "cache", llm_model_path=gguf, llm_context=2048, answer_tokens=24
    )
    Ingestor(settings, Path(settings.index_dir)).run([notes])

    report = prepare_long_context(settings=settings, backend=EmbeddedBackend(settings))
    assert report.status == "prepared", report.message
    print(f"\n{report}")

    fresh = EmbeddedBackend(settings)  # another process: `rag ask` after the cron job
    try:
        a = answerer(settings, fresh)
        route, _, _ = a.route(QUESTION)
        assert any("キャッシュ済み" in r for r in route.reasons)
        answer = a.ask(QUESTION, mode="long-context")
        c = answer.completion
        print(f"prompt {c.prompt_tokens} tokens, {c.cached_prompt_tokens} from the state, "
              f"{c.prompt_seconds:.2f} s to the first token: {answer.raw_answer!r}")
        assert c.cached_prompt_tokens >= report.corpus_tokens
        assert answer.tokens_read <= a.prompt_tokens(QUESTION)
    finally:
        fresh.close()
