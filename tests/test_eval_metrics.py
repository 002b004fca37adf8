"""Retrieval metrics on hand-checked toy runs, and the evaluation data loaders."""

import json
import math

import pytest

from pipeline.errors import ReadError
from pipeline.evaluation.datasets import load_retrieval_dataset, spread
from pipeline.evaluation.metrics import (
    dedupe,
    mean_scores,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    recall_at_k,
    score_query,
)

# Worked by hand: gold {d1, d2}; chunks of d3, d1, d3 again, d2, d5.
# Documents rank at their best chunk: d3, d1, d2, d5.
# DCG = 1/log2(3) + 1/log2(4); ideal = 1 + 1/log2(3).
TOY_RANKED = ["d3", "d1", "d3", "d2", "d5"]
TOY_GOLD = ["d1", "d2"]
TOY_NDCG = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))  # 0.6934...


def test_a_document_ranks_at_its_best_chunk():
    assert dedupe(TOY_RANKED) == ["d3", "d1", "d2", "d5"]


def test_toy_run_scores_match_the_hand_computation():
    s = score_query(TOY_RANKED, TOY_GOLD)
    assert s.recall == {1: 0.0, 5: 1.0, 10: 1.0}
    assert s.mrr10 == pytest.approx(0.5)
    assert s.ndcg10 == pytest.approx(TOY_NDCG)
    assert round(TOY_NDCG, 4) == 0.6934


def test_recall_is_the_fraction_of_gold_documents_found():
    ranked = ["a", "x", "y", "b"]
    assert recall_at_k(ranked, ["a", "b"], 1) == 0.5
    assert recall_at_k(ranked, ["a", "b"], 3) == 0.5
    assert recall_at_k(ranked, ["a", "b"], 4) == 1.0


def test_a_question_with_no_gold_in_the_top_ten_scores_zero():
    ranked = [f"n{i}" for i in range(10)] + ["gold"]
    s = score_query(ranked, ["gold"])
    assert (s.recall[10], s.mrr10, s.ndcg10) == (0.0, 0.0, 0.0)


def test_perfect_ranking_scores_one_with_two_gold_documents():
    assert ndcg_at_k(["g1", "g2", "x"], ["g1", "g2"], 10) == pytest.approx(1.0)
    assert ndcg_at_k(["g2", "g1"], ["g1", "g2"], 10) == pytest.approx(1.0)
    assert mrr_at_k(["x", "x2", "g"], ["g"], 10) == pytest.approx(1 / 3)


def test_ndcg_of_one_gold_at_rank_three():
    assert ndcg_at_k(["a", "b", "g"], ["g"], 10) == pytest.approx(0.5)


def test_means_over_questions_use_the_json_keys():
    m = mean_scores([score_query(TOY_RANKED, TOY_GOLD), score_query(["a", "b"], ["z"])])
    assert set(m) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
    assert m["recall@5"] == pytest.approx(0.5)
    assert m["mrr@10"] == pytest.approx(0.25)
    assert m["ndcg@10"] == pytest.approx(TOY_NDCG / 2)


@pytest.mark.parametrize(
    "values,p,expected",
    [([10, 20, 30, 40], 50, 25.0), ([10, 20, 30, 40], 95, 38.5), ([7.0], 95, 7.0), ([], 50, 0.0),
     ([3, 1, 2], 50, 2.0)],
)
def test_percentiles_interpolate_like_numpy(values, p, expected):
    assert percentile(values, p) == pytest.approx(expected)


def test_spread_keeps_evenly_spaced_items_in_order():
    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert spread(list(range(4)), None) == [0, 1, 2, 3]
    assert spread(list(range(4)), 10) == [0, 1, 2, 3]


def _write(folder, corpus, queries):
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus), "utf-8"
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in queries), "utf-8"
    )


def test_dataset_loads_typed_records_and_hashes_the_corpus(tmp_path):
    _write(
        tmp_path / "set",
        [{"doc_id": "x:1", "title": "梅雨", "text": "梅雨は雨の多い期間。"}],
        [{"qid": "q1", "question": "梅雨とは？", "answers": ["雨の多い期間"], "gold_doc_ids": ["x:1"],
          "meta": {"type": "t"}}],
    )
    ds = load_retrieval_dataset(tmp_path / "set")
    assert ds.name == "set"
    assert ds.corpus[0].title == "梅雨"
    assert ds.queries[0].gold_doc_ids == ("x:1",)
    assert ds.queries[0].answers == ("雨の多い期間",)
    assert len(ds.corpus_sha256) == 64


def test_gold_document_missing_from_the_corpus_is_reported(tmp_path):
    _write(
        tmp_path / "set",
        [{"doc_id": "x:1", "title": "", "text": "本文"}],
        [{"qid": "q1", "question": "？", "answers": [], "gold_doc_ids": ["x:2"]}],
    )
    with pytest.raises(ReadError, match="x:2"):
        load_retrieval_dataset(tmp_path / "set")


def test_broken_json_line_names_the_file_and_line(tmp_path):
    d = tmp_path / "set"
    _write(d, [{"doc_id": "x:1", "title": "", "text": "本文"}], [])
    with (d / "corpus.jsonl").open("a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(ReadError, match=r"corpus\.jsonl:2"):
        load_retrieval_dataset(d)
