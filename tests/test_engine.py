"""The answering engine with a fake LLM: routing, packing, fallback, the JSON shape."""

import re
from dataclasses import FrozenInstanceError, replace

import pytest

from pipeline.answer.backends.base import FAKE_INFO, FakeBackend, format_chat
from pipeline.answer.engine import Answerer
from pipeline.answer.prompts import SHORT_PREFILL
from pipeline.index.embedder import HashEmbedder
from pipeline.index.search import Retrieval
from pipeline.index.snapshot import open_index
from pipeline.ingest.sync import Ingestor
from tests.conftest import hash_settings


@pytest.fixture
def demo_index(tmp_path, notes):
    settings = hash_settings(tmp_path / "idx", top_k=2)
    Ingestor(settings, tmp_path / "idx").run([notes])
    return settings, open_index(settings)


# What `rag ask --json` prints: scripts read these keys.
ASK_JSON_KEYS = {
    "question", "answer", "raw_answer", "evidence", "mode", "fallback_from", "backend", "refused",
    "route", "sentences", "citation_recall", "citation_precision", "sources", "seconds",
    "tokens_read", "label", "answer_label_added", "checker", "replaced_answer",
    "first_token_seconds", "short_answer", "reranker",
}


def source_number_for(prompt: str, needle: str) -> int:
    """The [n] the prompt gave to the source that contains `needle`."""
    for m in re.finditer(r'<資料 番号="(\d+)"[^>]*>\n(.*?)</資料>', prompt, re.S):
        if needle in m.group(2):
            return int(m.group(1))
    raise AssertionError(f"{needle!r} not in the prompt")


def n_sources(prompt: str) -> int:
    return len(re.findall(r'<資料 番号="\d+"', prompt))


def answering(needle: str, answer: str):
    """A model that follows either prompt: the short one (ends with 回答:) or the quoting one."""

    def handler(prompt: str) -> str:
        n = source_number_for(prompt, needle)
        if prompt.endswith(SHORT_PREFILL):
            return f" {answer}[{n}]"
        return f" 「{needle}」[{n}]\n回答: {answer}[{n}]"

    return handler


def test_retrieve_mode_cites_the_right_file(demo_index):
    settings, index = demo_index
    fake = FakeBackend(answering("既定のポートは11434", "Ollamaの既定のポートは11434です。"))
    answer = Answerer(settings, index, fake).ask("Ollamaの既定のポートは？", mode="retrieve")
    data = answer.to_dict()
    assert data["mode"] == "retrieve"
    assert set(data) == ASK_JSON_KEYS
    cited = [s for s in data["sources"] if s["cited"]]
    assert [s["path"].rsplit("/", 1)[-1] for s in cited] == ["ollama.md"]
    assert data["sentences"][0]["citations"] == [cited[0]["number"]]
    assert data["short_answer"] == "11434"  # the sentence without the question it repeats
    assert data["route"]["reasons"]
    # Retrieved chunks are put back in document order.
    keys = [(s["path"], s["start"]) for s in data["sources"]]
    assert keys == sorted(keys)


def test_a_model_that_only_quotes_is_asked_for_its_answer(demo_index):
    settings, index = demo_index
    settings = settings.model_copy(update={"answer_style": "quote"})
    needle = "既定のポートは11434"

    def handler(prompt):
        n = source_number_for(prompt, needle)
        if prompt.endswith("\n回答:"):
            return f" Ollamaの既定のポートは11434です。[{n}]"
        return f" 「{needle}で、ほかのポートにも変えられる"  # budget spent quoting: no 回答, quote unclosed

    fake = FakeBackend(handler)
    answer = Answerer(settings, index, fake).ask("Ollamaの既定のポートは？", mode="retrieve")
    first, second = fake.prompts
    assert second.startswith(first) and second.endswith("変えられる」\n回答:")
    assert answer.answer.startswith("Ollamaの既定のポートは11434です。")
    assert answer.evidence.startswith("「既定のポートは11434")
    data = answer.to_dict()
    assert data["answer_label_added"] is True
    cited = [s for s in data["sources"] if s["cited"]]
    assert [s["path"].rsplit("/", 1)[-1] for s in cited] == ["ollama.md"]


def test_a_labelled_answer_takes_one_call(demo_index):
    settings, index = demo_index
    fake = FakeBackend(answering("既定のポートは11434", "Ollamaの既定のポートは11434です。"))
    answer = Answerer(settings, index, fake).ask("Ollamaの既定のポートは？", mode="retrieve")
    assert len(fake.prompts) == 1 and answer.to_dict()["answer_label_added"] is False


def test_long_context_prefix_is_byte_identical_and_question_last(demo_index):
    settings, index = demo_index
    fake = FakeBackend(lambda p: "回答: 資料からは分かりません。")
    answerer = Answerer(settings, index, fake)
    answerer.ask("Ollamaの既定のポートは？", mode="long-context")
    answerer.ask("RAGはどんな手法ですか？", mode="long-context")
    first, second = fake.prompts
    q1, q2 = first.rindex("質問: Ollamaの既定のポート"), second.rindex("質問: RAGはどんな手法")
    assert first[:q1] == second[:q2]  # everything before the question is stable
    assert n_sources(first) == len(index.documents)


def test_unanswerable_retrieve_answer_retries_with_long_context(demo_index, monkeypatch):
    settings, index = demo_index

    def handler(prompt):
        if n_sources(prompt) < len(index.documents):
            return "回答: 資料からは分かりません。"
        n = source_number_for(prompt, "4bit量子化")
        return f"「4bit量子化で約4GB」[{n}]\n回答: 約4GBです。[{n}]"

    answerer = Answerer(settings, index, FakeBackend(handler))
    # A confident, pointed question over a corpus bigger than the retrieved chunks:
    # both retrievers agree on one chunk.
    monkeypatch.setattr(answerer, "_retrieve", lambda q: Retrieval(index.sparse(q, 1), index.sparse(q, 1), index.sparse(q, 1)))
    answer = answerer.ask("7Bモデルのメモリは？")
    assert answer.fallback_from == "retrieve" and answer.mode == "long-context"
    assert any("Self-Route" in r for r in answer.route.reasons)
    assert "4GB" in answer.answer


def test_corpus_larger_than_the_window_packs_the_best_documents(demo_index):
    settings, index = demo_index
    probe = Answerer(settings, index, FakeBackend(str))
    corpus_tokens = probe.corpus_tokens()
    prompt = probe.prompt_tokens("Ollamaのポートは？")
    window = prompt + settings.answer_tokens + int(corpus_tokens * 0.7)  # most, not all, of the corpus fits
    small = FakeBackend(lambda p: "回答: 資料からは分かりません。", info=replace(FAKE_INFO, context_window=window))
    answer = Answerer(settings, index, small).ask("Ollamaのポートは？", mode="long-context")
    assert answer.mode == "top-documents"
    assert 0 < len(answer.sources) < len(index.documents)
    assert any(s.chunk.path.endswith("ollama.md") for s in answer.sources)


def test_a_best_document_larger_than_the_window_is_answered_from_its_chunks(demo_index):
    from pipeline.answer.packing import document_chunk, render_source
    from pipeline.documents import Source

    settings, index = demo_index
    ollama = next(d for d in index.documents.values() if d.path.endswith("ollama.md"))
    probe = FakeBackend(str)
    too_big = probe.count_tokens(render_source(Source(0, document_chunk(ollama)), str))
    prompt = Answerer(settings, index, probe).prompt_tokens("Ollamaの既定のポートは？")
    window = prompt + settings.answer_tokens + too_big // 2  # the best document cannot fit whole
    small = FakeBackend(lambda p: "回答: 資料からは分かりません。", info=replace(FAKE_INFO, context_window=window))
    answer = Answerer(settings, index, small).ask("Ollamaの既定のポートは？", mode="long-context")
    assert answer.mode == "retrieve"
    assert any("窓に収まらない" in r for r in answer.route.reasons)
    assert any(s.chunk.path.endswith("ollama.md") for s in answer.sources)


def test_extractive_backend_quotes_sources_and_is_labelled(demo_index):
    from pipeline.answer.backends import load_backend

    settings, index = demo_index
    from pipeline.check import CitationChecker

    checker = CitationChecker(settings, embedder=None)
    answer = Answerer(settings, index, load_backend(settings, "extractive"), checker).ask("Ollamaの既定のポートは？", mode="retrieve")
    assert "抽出" in answer.answer  # clearly labelled
    assert "11434" in answer.raw_answer
    assert re.search(r"\[\d+\]", answer.raw_answer)
    # Quoted verbatim, so every sentence is supported by what it cites.
    data = answer.to_dict()
    assert data["sentences"] and all(s["verdict"] == "supported" for s in data["sentences"])


def test_an_answer_is_a_frozen_value(demo_index):
    settings, index = demo_index
    answer = Answerer(settings, index, FakeBackend(answering("既定のポートは11434", "11434です。"))).ask(
        "Ollamaの既定のポートは？", mode="retrieve"
    )
    with pytest.raises(FrozenInstanceError):
        answer.answer = "別の答え"
    assert set(answer.to_dict()["route"]) == {
        "mode", "reasons", "usable_window", "corpus_tokens", "estimates", "allow_fallback", "token_count_estimated",
    }


def test_figures_under_an_answer_describe_the_citations_as_shown(demo_index):
    """The checker moves a citation to the source that supports the sentence: the figures
    printed under the answer are about the moved citation, not the one the model wrote."""
    from pipeline.check import CitationChecker

    settings, index = demo_index

    def wrong_source(prompt):
        n = source_number_for(prompt, "検索した文書を根拠")  # rag.org, not ollama.md
        return f"回答: Ollamaの既定のポートは11434です。[{n}]"

    checker = CitationChecker(settings, embedder=None)
    answer = Answerer(settings, index, FakeBackend(wrong_source), checker).ask("Ollamaのポートは？", mode="long-context")
    data = answer.to_dict()
    assert [s["verdict"] for s in data["sentences"]] == ["supported_by_other"]
    moved_to = data["sentences"][0]["fixed_citations"][0]
    assert f"[{moved_to}]" in data["answer"]  # the answer as shown cites the supporting source
    # The model's own citations were wrong (what `rag eval answers` measures)...
    assert answer.checked.citation_recall == 0.0 and answer.checked.citation_precision == 0.0
    # ...the ones the user reads are right.
    assert (data["citation_recall"], data["citation_precision"]) == (1.0, 1.0)


def test_figures_of_a_stripped_answer_count_only_what_is_left(demo_index):
    from pipeline.check import CitationChecker

    settings, index = demo_index

    def one_true_one_false(prompt):
        n = source_number_for(prompt, "既定のポートは11434")
        m = source_number_for(prompt, "検索した文書を根拠")
        return f"回答: Ollamaの既定のポートは11434です。[{n}]\nRAGは2010年に発明された。[{m}]"

    checker = CitationChecker(settings, embedder=None)
    answerer = Answerer(settings, index, FakeBackend(one_true_one_false), checker)
    annotated = answerer.ask("Ollamaのポートは？", mode="long-context", policy="annotate")
    stripped = answerer.ask("Ollamaのポートは？", mode="long-context", policy="strip")
    assert annotated.citation_recall == 0.5  # the unsupported sentence is shown, marked
    assert "2010" not in stripped.answer and stripped.citation_recall == 1.0


class CountingEmbedder(HashEmbedder):
    """The hashing embedder, counting the questions it embeds."""

    def __init__(self):
        super().__init__(256)
        self.queries: list[str] = []

    def embed_query(self, text):
        self.queries.append(text)
        return super().embed_query(text)


@pytest.mark.parametrize("mode", ["auto", "retrieve", "long-context"])
def test_one_question_is_embedded_once(demo_index, mode):
    """One embedding per question: a one-shot `rag ask` never reaches the embedder's second
    query, which is when it builds its frozen query graph (`index.query_encoder`)."""
    settings, _ = demo_index
    embedder = CountingEmbedder()
    index = open_index(settings, embedder=embedder)
    fake = FakeBackend(answering("既定のポートは11434", "Ollamaの既定のポートは11434です。"))
    Answerer(settings, index, fake).ask("Ollamaの既定のポートは？", mode=mode)
    assert embedder.queries == ["Ollamaの既定のポートは？"]


def test_a_question_over_a_corpus_too_big_for_the_window_is_embedded_once(demo_index):
    settings, _ = demo_index
    embedder = CountingEmbedder()
    index = open_index(settings, embedder=embedder)
    probe = Answerer(settings, index, FakeBackend(str))
    window = probe.prompt_tokens("Ollamaのポートは？") + settings.answer_tokens + probe.corpus_tokens() // 2
    small = FakeBackend(lambda p: "回答: 資料からは分かりません。", info=replace(FAKE_INFO, context_window=window))
    answer = Answerer(settings, index, small).ask("Ollamaのポートは？", mode="long-context")
    assert answer.mode in ("top-documents", "retrieve")
    assert embedder.queries == ["Ollamaのポートは？"]


class ChatFake(FakeBackend):
    """The fake backend with the embedded model's chat template."""

    def format_chat(self, system, user):
        return format_chat(system, user)


def test_the_prompt_overhead_is_measured_on_the_prompt(demo_index):
    from pipeline.tokens import ANSWER_TEMPLATE_TOKENS

    settings, index = demo_index
    answerer = Answerer(settings, index, ChatFake(str))
    question = "Ollamaの既定のポートは？"
    # The router reserves what the prompt around the sources really takes, question included.
    assert answerer.prompt_tokens(question) > answerer.prompt_tokens("")
    route, _, _ = answerer.route(question)
    assert route.usable_window == (
        FAKE_INFO.context_window - answerer.prompt_tokens(question) - settings.answer_tokens
    )
    # `rag status` cannot build the prompt (it sits below answer/) and uses this figure:
    # change the prompt and this fails until the figure is measured again.
    assert answerer.prompt_tokens("") == ANSWER_TEMPLATE_TOKENS
