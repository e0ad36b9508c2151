"""Ranking metrics against cases worked out by hand."""

import math

import numpy as np
import pytest

from training.quality import aggregate, hit_rate_at_k, mrr_at_k, ndcg_at_k, recall_at_k

RANKED = ["a", "b", "c", "d", "e"]


def test_recall_counts_hits_in_top_k_over_all_relevant():
    assert recall_at_k(RANKED, {"b", "d", "z"}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, {"b", "d", "z"}, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, {"z"}, 5) == 0.0
    assert recall_at_k(RANKED, set(), 5) == 0.0


def test_ndcg_uses_log2_discount_and_ideal_for_relevant_count():
    # hits at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal for 3 relevant in top 5.
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RANKED, {"b", "d", "z"}, 5) == pytest.approx(dcg / idcg)
    # ideal is capped at k: one hit at rank 1 of k=1 is perfect whatever |relevant|.
    assert ndcg_at_k(RANKED, {"a", "b", "c"}, 1) == pytest.approx(1.0)
    assert ndcg_at_k(RANKED, {"a", "b"}, 5) == pytest.approx(1.0)
    assert ndcg_at_k(RANKED, {"z"}, 5) == 0.0


def test_hit_rate_and_mrr():
    assert hit_rate_at_k(RANKED, {"c"}, 3) == 1.0
    assert hit_rate_at_k(RANKED, {"c"}, 2) == 0.0
    assert mrr_at_k(RANKED, {"c", "e"}, 5) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, {"e"}, 4) == 0.0


def test_numpy_rankings_and_duplicates():
    ranked = np.array([3, 3, 7])
    assert recall_at_k(ranked, {3, 7}, 3) == pytest.approx(1.0)  # the repeat counts once
    assert recall_at_k(ranked, {3, 7}, 2) == pytest.approx(0.5)


def test_k_must_be_positive():
    with pytest.raises(ValueError):
        recall_at_k(RANKED, {"a"}, 0)


def test_aggregate_averages_users_and_skips_empty_relevant():
    out = aggregate([RANKED, RANKED, RANKED], [{"a"}, {"z"}, set()], ks=(1, 5))
    assert out["users"] == 2
    assert out["recall_at_1"] == pytest.approx(0.5)
    assert out["hit_rate_at_5"] == pytest.approx(0.5)
    assert out["ndcg_at_5"] == pytest.approx(0.5)
    assert out["mrr_at_5"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        aggregate([RANKED], [], ks=(1,))
