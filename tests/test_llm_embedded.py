"""The embedded llama.cpp backend with the real Qwen2.5-Coder-1.5B GGUF (slow: ≈ 1–2 min on 2 cores)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.answer.backends import format_chat
from pipeline.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "corpora" / "demo"
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def _settings(cache_dir: Path, llm_context: int = 2048) -> Settings:
    """Every setting the embedded backend reads, given here (not from rag.toml or RAG_*)."""
    return Settings(
        cache_dir=cache_dir, llm_context=llm_context, llm_threads=2, llm_model_path=None, llm_flash_attn=False
    )


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    from pipeline.models.gguf import prepare_gguf
    from pipeline.settings import default_cache_dir

    cache = default_cache_dir()
    try:
        prepare_gguf(cache)
    except Exception as err:  # noqa: BLE001 - parts not installed here
        pytest.skip(f"embedded GGUF unavailable: {err}")
    return cache


@pytest.fixture(scope="module")
def backend(cache_dir):
    from pipeline.answer.backends.llama_cpp import EmbeddedBackend

    b = EmbeddedBackend(_settings(cache_dir))
    yield b
    b.close()


def test_embedded_backend_answers_a_japanese_prompt_in_japanese(backend):
    prompt = format_chat("あなたは日本語で簡潔に答えるアシスタントです。", "日本の首都はどこですか？一文で答えてください。")
    c = backend.complete(prompt, max_tokens=32)
    print(f"\n{c}")
    assert c.text.strip() and JAPANESE.search(c.text)
    assert 0 < c.completion_tokens <= 32
    assert c.prompt_tokens == len(backend.prompt_tokens(prompt))
    assert c.backend == "embedded" and c.prompt_seconds is not None


JUDGE = "資料が主張を支持しているかを判定します。「はい」か「いいえ」だけで答えてください。"
PAIRS = [
    (
        "Ollamaのサーバーの既定のポートは11434です。",
        "Ollamaの既定のポートは11434である。",
        "Ollamaの既定のポートは8080である。",
    ),
    (
        "7Bモデルは4bit量子化で約4GBのメモリで動く。",
        "4bit量子化した7Bモデルは約4GBのメモリで動く。",
        "7Bモデルを動かすには64GBのメモリが必要である。",
    ),
]


@pytest.mark.parametrize("passage, supported, unsupported", PAIRS)
def test_prob_yes_is_higher_for_a_supported_claim(backend, passage, supported, unsupported):
    def judge(claim: str) -> float:
        return backend.prob_yes(format_chat(JUDGE, f"資料: {passage}\n主張: {claim}\n資料は主張を支持していますか？"))

    p_supported, p_unsupported = judge(supported), judge(unsupported)
    print(f"\nP(はい) supported={p_supported:.3f} unsupported={p_unsupported:.3f}")
    assert 0.0 <= p_unsupported < p_supported <= 1.0


def _prefix_and_prompt() -> tuple[str, str]:
    notes = "\n\n".join(
        f'<資料 番号="{i}">\n{(DEMO / name).read_text("utf-8").strip()}\n</資料>'
        for i, name in enumerate(["ollama-setup.org"], 1)
    )
    system = "あなたは資料だけを根拠に日本語で答えるアシスタントです。\n\n資料:\n" + notes
    question = "質問: Ollamaの既定のポートは何番ですか？"
    prompt = format_chat(system, question)
    return prompt[: prompt.index(question)], prompt


def test_prepared_prefix_is_not_read_again(backend, cache_dir, tmp_path):
    from pipeline.answer.backends.llama_cpp import EmbeddedBackend

    prefix, prompt = _prefix_and_prompt()
    assert prompt.startswith(prefix)
    n_prefix = len(backend.prompt_tokens(prefix))
    assert 500 <= n_prefix <= 900

    backend.reset()
    uncached = backend.complete(prompt, max_tokens=8)
    assert uncached.cached_prompt_tokens == 0

    state = backend.prepare_prefix(prefix, "demo", tmp_path)
    assert (tmp_path / "demo.bin").exists()
    meta = json.loads((tmp_path / "demo.json").read_text("utf-8"))
    assert meta["tokens"] == n_prefix == len(state.tokens)

    backend.reset()  # forget the in-memory cache: the state must come from the file
    cached = backend.complete(prompt, max_tokens=8, prefix_cache_key="demo")
    assert cached.cached_prompt_tokens >= 500
    assert cached.cached_prompt_tokens >= n_prefix - 1
    assert cached.prompt_tokens == uncached.prompt_tokens

    # Another process (here: another instance, with a different n_ctx) finds the saved
    # state and only registers it.
    other = EmbeddedBackend(_settings(cache_dir, llm_context=1536))
    try:
        again = other.prepare_prefix(prefix, "demo", tmp_path)
        assert again.seconds_to_build is None
        from_disk = other.complete(prompt, max_tokens=8, prefix_cache_key="demo")
        assert from_disk.cached_prompt_tokens >= n_prefix - 1
    finally:
        other.close()

    print(
        f"\nprefix {n_prefix} tokens, state file {meta['bytes'] / 1e6:.1f} MB\n"
        f"uncached: prompt {uncached.prompt_tokens} tok, {uncached.prompt_seconds:.2f} s to first token, "
        f"{uncached.text!r}\n"
        f"cached:   {cached.cached_prompt_tokens} tok from the state, {cached.prompt_seconds:.2f} s, {cached.text!r}\n"
        f"other instance: {from_disk.prompt_seconds:.2f} s, {from_disk.text!r}"
    )


def test_unusable_state_file_is_dropped_and_the_prompt_read_in_full(backend, tmp_path):
    prefix = format_chat("あなたは日本語で答えます。", "x")[: -len("<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n")]
    prompt = prefix + "<|im_start|>user\n今日は？<|im_end|>\n<|im_start|>assistant\n"
    backend.prepare_prefix(prefix, "small", tmp_path)
    (tmp_path / "small.bin").write_bytes(b"not a llama state")
    backend.reset()
    c = backend.complete(prompt, max_tokens=2, prefix_cache_key="small")
    assert c.cached_prompt_tokens == 0
    assert not (tmp_path / "small.bin").exists() and not (tmp_path / "small.json").exists()


def test_measure_speed_reports_measured_speeds_in_info(cache_dir, tmp_path):
    from pipeline.answer.backends.llama_cpp import EmbeddedBackend

    b = EmbeddedBackend(_settings(tmp_path, llm_context=1024),
                        model_path=cache_dir / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    try:
        assert not b.info.speed_measured
        speed = b.measure_speed(prompt_tokens=128, gen_tokens=8)
        print(f"\n{speed}")
        assert b.info.speed_measured and b.info.prompt_tokens_per_s == speed["prompt_tokens_per_s"] > 0
        assert EmbeddedBackend(
            _settings(tmp_path, llm_context=1024), model_path=b.model_path
        ).info.speed_measured  # read back from cache_dir
    finally:
        b.close()
