"""Ranking metrics against hand-computed values, and their edge cases (see retrieval/metrics.py)."""

from __future__ import annotations

import math

import pytest

from retrieval.metrics import aggregate, dcg, mrr_at, ndcg_at, precision_at, recall_at, score_query

LOG2_3 = math.log2(3)


def test_graded_ndcg_by_hand():
    gains = {"a": 2, "b": 1, "c": 1}
    # ranking: b (1 / log2 2 = 1), x (0), a (2 / log2 4 = 1); ideal: a, b, c = 2 + 1 / log2 3 + 1 / 2
    expected = (1.0 + 2 / 2) / (2 + 1 / LOG2_3 + 0.5)
    assert ndcg_at(["b", "x", "a"], gains) == pytest.approx(expected)
    assert ndcg_at(["a", "b", "c"], gains) == pytest.approx(1.0)
    assert ndcg_at(["a", "c", "b"], gains) == pytest.approx(1.0)  # equal gains in either order are ideal
    assert dcg([3, 0, 1]) == pytest.approx(3 + 1 / 2)


def test_ideal_dcg_comes_from_the_relevant_gains_truncated_at_k():
    gains = {f"r{i}": 1 for i in range(15)}  # 15 relevant: the ideal top 10 is all relevant
    ranking = [f"r{i}" for i in range(5)] + [f"x{i}" for i in range(5)]
    expected = sum(1 / math.log2(r + 1) for r in range(1, 6)) / sum(1 / math.log2(r + 1) for r in range(1, 11))
    assert ndcg_at(ranking, gains) == pytest.approx(expected)
    assert precision_at(ranking, gains) == pytest.approx(0.5)
    assert recall_at(ranking, gains, 10) == pytest.approx(5 / 15)


def test_fewer_results_than_k_count_as_non_relevant():
    gains = {"a": 1, "b": 1}
    assert precision_at(["a"], gains, 10) == pytest.approx(0.1)  # P@10 divides by 10, not by 1
    assert recall_at(["a"], gains, 50) == pytest.approx(0.5)
    assert ndcg_at(["a"], gains) == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert score_query([], gains) == {"recall@1": 0, "recall@5": 0, "recall@10": 0, "recall@50": 0,
                                      "mrr@10": 0, "ndcg@10": 0, "p@10": 0}


def test_ties_are_taken_in_the_given_order_and_repeats_count_once():
    gains = {"a": 1}
    assert mrr_at(["x", "a"], gains) == pytest.approx(0.5)  # even if x and a had the same score
    assert mrr_at(["a", "x"], gains) == pytest.approx(1.0)
    assert precision_at(["a", "a", "a"], gains, 10) == pytest.approx(0.1)
    assert ndcg_at(["a", "a"], {"a": 1, "b": 1}) == pytest.approx(1 / (1 + 1 / LOG2_3))


def test_mrr():
    gains = {"c": 1, "d": 2}
    assert mrr_at(["a", "b", "c", "d"], gains) == pytest.approx(1 / 3)
    assert mrr_at([f"x{i}" for i in range(10)] + ["c"], gains) == 0.0  # rank 11 is past the cutoff
    assert recall_at(["a", "b", "c", "d"], gains, 1) == 0.0
    assert recall_at(["a", "b", "c", "d"], gains, 5) == 1.0


def test_no_relevant_item_is_left_out_of_the_averages_and_counted():
    assert score_query(["a"], {}) is None
    assert score_query(["a"], {"a": 0, "b": -1}) is None  # gains <= 0 are not relevant
    perfect = score_query(["a"], {"a": 1})
    half = score_query(["x", "a"], {"a": 1})
    summary = aggregate([perfect, None, half, None])
    assert summary["n_queries"] == 2 and summary["n_no_relevant"] == 2
    assert summary["mrr@10"] == pytest.approx(0.75)
    assert summary["recall@1"] == pytest.approx(0.5)
    assert math.isnan(aggregate([None])["ndcg@10"])
