"""The router on constructed corpora: every decision comes with its reasons."""

import pytest

from pipeline.answer.router import RouteInputs, decide, is_global_question


def inputs(**kw):
    base = dict(
        question="Ollamaの既定のポートは？", corpus_tokens=6000, retrieve_tokens=1500, window=32768,
        prompt_tokens=400, answer_tokens=256, prompt_tokens_per_s=52, gen_tokens_per_s=12,
        prefix_cached=True, latency_budget_s=120, retrieval_confidence=0.3,
    )
    return RouteInputs(**{**base, **kw})


def test_small_corpus_goes_to_long_context():
    route = decide(inputs(corpus_tokens=1800, retrieval_confidence=0.9))
    assert route.mode == "long-context"
    assert route.reasons and route.usable_window == 32768 - 400 - 256


def test_corpus_over_the_window_goes_to_retrieve():
    route = decide(inputs(corpus_tokens=200_000))
    assert route.mode == "retrieve"
    assert any("窓に入らない" in r for r in route.reasons)


def test_global_question_over_the_window_packs_top_documents():
    route = decide(inputs(corpus_tokens=200_000, question="ローカルLLMの実行ツールをすべて挙げて"))
    assert route.mode == "top-documents"


def test_zero_latency_budget_without_cached_prefix_goes_to_retrieve():
    route = decide(inputs(prefix_cached=False, latency_budget_s=0))
    assert route.mode == "retrieve"
    assert route.estimates["long-context"].seconds > route.estimates["retrieve"].seconds - 1e-9


def test_cached_prefix_makes_long_context_cheap():
    cold = decide(inputs(prefix_cached=False, latency_budget_s=60))
    warm = decide(inputs(prefix_cached=True, latency_budget_s=60))
    assert cold.mode == "retrieve" and warm.mode == "long-context"
    assert warm.estimates["long-context"].seconds < cold.estimates["long-context"].seconds


def test_cost_budget_sends_paid_long_context_to_retrieve():
    route = decide(inputs(prefix_cached=False, price_in_per_mtok=3.0, cost_budget=0.001, prompt_tokens_per_s=5000, gen_tokens_per_s=100))
    assert route.mode == "retrieve"


@pytest.mark.parametrize("question", ["メモの内容をまとめて", "量子化の方式を比較して", "LLMはいくつ紹介されている？", "ツールを一覧にして"])
def test_global_questions_favour_the_whole_corpus(question):
    assert is_global_question(question)
    assert decide(inputs(question=question, retrieval_confidence=1.0)).mode == "long-context"


def test_confident_pointed_question_retrieves_and_allows_fallback():
    route = decide(inputs(retrieval_confidence=0.9))
    assert route.mode == "retrieve" and route.allow_fallback


def test_estimated_token_counts_are_marked():
    route = decide(inputs(token_count_estimated=True))
    assert route.token_count_estimated and "推定" in route.reasons[0]


def test_a_route_is_frozen_and_renders_as_plain_json():
    import dataclasses
    import json

    route = decide(inputs(retrieval_confidence=0.9))
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.mode = "long-context"
    data = json.loads(json.dumps(route.to_dict()))
    assert data["mode"] == "retrieve" and data["reasons"] == list(route.reasons)
    assert data["estimates"]["retrieve"] == {
        "input_tokens": 400 + 1500, "seconds": route.estimates["retrieve"].seconds,
        "cost": route.estimates["retrieve"].cost,
    }


def test_usable_window_is_the_shared_rule():
    from pipeline.tokens import usable_window

    route = decide(inputs(window=8192, prompt_tokens=350, answer_tokens=200))
    assert route.usable_window == usable_window(8192, prompt_tokens=350, answer_tokens=200) == 8192 - 350 - 200


def test_a_corpus_about_the_size_of_the_retrieved_chunks_is_read_whole():
    from pipeline.answer.router import WHOLE_CORPUS_RATIO

    near = decide(inputs(corpus_tokens=int(1500 * WHOLE_CORPUS_RATIO), retrieval_confidence=0.9))
    far = decide(inputs(corpus_tokens=int(1500 * WHOLE_CORPUS_RATIO) + 1, retrieval_confidence=0.9))
    assert near.mode == "long-context" and far.mode == "retrieve"


def test_a_cached_prefix_costs_only_the_question_and_short_answers_cost_little():
    route = decide(inputs(prefix_cached=True, question_tokens=40, retrieve_prompt_tokens=60, retrieve_answer_tokens=64))
    lc, rt = route.estimates["long-context"], route.estimates["retrieve"]
    assert lc.input_tokens == 40  # rules and corpus come from the saved state
    assert rt.input_tokens == 60 + 1500
    assert rt.seconds == pytest.approx(1560 / 52 + 64 / 12, abs=0.01)
    uncached = decide(inputs(prefix_cached=False, question_tokens=40)).estimates["long-context"]
    assert uncached.input_tokens == 400 + 6000  # everything is read


def test_with_the_short_answer_path_low_confidence_still_retrieves_first():
    low = inputs(retrieval_confidence=0.1, corpus_tokens=20_000)
    assert decide(low).mode == "long-context"
    route = decide(RouteInputs(**{**low.__dict__, "retrieve_first": True}))
    assert route.mode == "retrieve" and route.allow_fallback  # long context if the answer is 「分かりません」
    assert "検索の確信度は低い" in route.reasons[-1]
