"""Evaluation maths against hand-computed cases: ranking quality, baselines' ranking, the
co-visitation statistic, its re-rank term with its reason, and MMR diversity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.catalog import Catalog
from core.ranking import diversify, rerank
from core.records import ItemRecord, UserHead
from core.state import RecentItem, UserState
from evaluation.baselines import CovisitKnn, KnnConfig, Popularity, top_k
from evaluation.scoring import (
    coverage,
    intra_list_diversity,
    ndcg,
    rank_of,
    reciprocal_rank,
    summarize,
)
from tests.test_recommend import rank_params
from training.covisit import CovisitConfig, covisit_matrix, with_covisit
from training.data import Interactions


def test_rank_based_scores_by_hand():
    assert rank_of(["a", "b", "c"], "c", 10) == 3
    assert rank_of(["a", "b", "c"], "c", 2) == 0
    assert ndcg(1) == 1.0 and ndcg(3) == pytest.approx(0.5) and ndcg(0) == 0.0
    assert reciprocal_rank(4) == 0.25 and reciprocal_rank(0) == 0.0
    # ranks 1, 3, miss, 7: HR 3/4; NDCG (1 + 1/2 + 0 + 1/3) / 4; MRR (1 + 1/3 + 1/7) / 4
    m = summarize([1, 3, 0, 7])
    assert m["hr"] == 0.75 and m["events"] == 4
    assert m["ndcg"] == pytest.approx((1 + 0.5 + 1 / 3) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 7) / 4)
    assert summarize([]) == {"hr": 0.0, "ndcg": 0.0, "mrr": 0.0, "events": 0}


def test_coverage_and_intra_list_diversity():
    assert coverage([[0, 1], [1, 2], []], 10) == pytest.approx(0.3)
    # pairs: {A}-{A} 0, {A}-{A,B} 1/2, {A}-{A,B} 1/2  -> mean 1/3
    assert intra_list_diversity([{"A"}, {"A"}, {"A", "B"}]) == pytest.approx(1 / 3)
    assert intra_list_diversity([{"A"}, {"B"}]) == 1.0
    assert intra_list_diversity([{"A"}]) == 0.0


def test_top_k_excludes_and_breaks_ties_by_row():
    assert top_k(np.array([0.5, 0.9, 0.9, 0.1]), [1], 3) == [2, 0, 3]
    assert top_k(np.array([1.0, 2.0]), [0, 1], 5) == []


def inter(rows):
    users, items = zip(*rows, strict=True)
    return Interactions.from_arrays(
        users, items, np.arange(len(rows), dtype=float), ["view"] * len(rows)
    )


def test_covisitation_counts_nearby_pairs_by_hand():
    # users: a x y z; b x y; c y z. Window 1, backward 0.5, no popularity damping.
    ev = inter([("a", "x"), ("a", "y"), ("a", "z"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z")])
    ids = ["x", "y", "z", "w"]
    m = covisit_matrix(ev, ids, CovisitConfig(window=1, backward=0.5, alpha=0.0)).toarray()
    # raw: x->y 2, y->x 2 * 0.5, y->z 2, z->y 2 * 0.5; rows scaled to max 1
    assert m[0].tolist() == [0, 1, 0, 0]
    assert m[1].tolist() == [0.5, 0, 1, 0]
    assert m[2].tolist() == [0, 1, 0, 0]
    assert m[3].tolist() == [0, 0, 0, 0]
    items = with_covisit(
        [ItemRecord(i, i.upper(), []) for i in ids],
        sparse := covisit_matrix(ev, ids, CovisitConfig(window=1, backward=0.5, alpha=0.0)),
    )
    assert sparse.nnz == 4
    assert items[1].extra["covisit"] == [["z", 1.0], ["x", 0.5]] and "covisit" not in items[3].extra


def test_knn_scores_recent_items_newest_first():
    ev = inter([("a", "x"), ("a", "y"), ("b", "z"), ("b", "w")])
    ids = ["x", "y", "z", "w"]
    cfg = KnnConfig(last_items=2, position_decay=0.5, covisit=CovisitConfig(window=1, alpha=0.0))
    knn = CovisitKnn(ev, ids, Popularity(ev, ids), cfg)
    knn.observe("u", 0, 0.0)  # x, then z: z's neighbour w outranks x's neighbour y
    knn.observe("u", 2, 1.0)
    assert knn.recommend("u", 2, [0, 2]) == [3, 1]
    assert knn.recommend("nobody", 1, []) == [0]  # popularity fallback, ties by row


def test_popularity_updates_prequentially():
    ev = inter([("a", "x"), ("b", "x")])
    pop = Popularity(ev, ["x", "y"])
    assert pop.recommend("u", 1, []) == [0]
    for _ in range(3):
        pop.observe("u", 1, 0.0)
    assert pop.recommend("u", 1, []) == [1]


def _catalog(covisit: dict[str, list]) -> Catalog:
    e = np.eye(3, dtype=np.float32)
    items = [
        ItemRecord("a", "Alien", ["Sci-Fi"], 0.1, {"covisit": covisit.get("a", [])}),
        ItemRecord("b", "Blade Runner", ["Sci-Fi"], 0.1),
        ItemRecord("c", "Casablanca", ["Drama"], 0.1),
        ItemRecord("d", "Dune", ["Sci-Fi"], 0.1),
    ]
    vecs = np.stack([e[0], e[0], e[1], e[0]])
    z = np.zeros
    head = UserHead(
        z((3, 1), np.float32), z(1, np.float32), z((1, 3), np.float32), z(3, np.float32)
    )
    return Catalog("v1", items, vecs, head)


def test_covisit_term_moves_the_item_and_names_it_truthfully():
    cat = _catalog({"a": [["c", 1.0], ["b", 0.25]]})
    now = 10_000.0
    state = UserState("u", last_ts=now - 180, recent=[RecentItem("a", now - 180, "rating")])
    params = rank_params(
        weight_ann=0.0,
        weight_category=0.0,
        weight_recent=0.0,
        weight_popularity=0.0,
        weight_covisit=1.0,
    )
    out = rerank([(1, 0.0), (2, 0.0), (3, 0.0)], cat, state, {}, params, now, 1.0, 3)
    assert [cat.items[r.row].item_id for r in out] == ["c", "b", "d"]
    # c's sum is the best (fade * 1.0), so it scores 1; b gets fade * 0.25 / (fade * 1.0)
    assert out[0].terms["covisit"] == pytest.approx(1.0)
    assert out[1].terms["covisit"] == pytest.approx(0.25)
    assert out[0].reasons[0] == "often picked with Alien, which you rated 3 minutes ago"
    # off by default: no term, the same order as before this feature existed
    plain = rerank([(1, 0.0), (2, 0.0)], cat, state, {}, rank_params(), now, 1.0, 2)
    assert all("covisit" not in r.terms for r in plain)


def test_mmr_trades_relevance_for_a_less_redundant_list():
    cat = _catalog({})
    state = UserState("u")
    params = rank_params(
        weight_ann=1.0, weight_category=0.0, weight_recent=0.0, weight_popularity=0.0
    )
    # a, b, d point the same way; c is orthogonal but scores lowest
    ranked = rerank([(0, 0.9), (1, 0.8), (3, 0.7), (2, 0.1)], cat, state, {}, params, 0.0, 1.0, 4)
    ids = lambda rs: [cat.items[r.row].item_id for r in rs]  # noqa: E731
    assert ids(diversify(ranked, cat, 1.0, 2)) == ["a", "b"]
    assert ids(diversify(ranked, cat, 0.5, 2)) == ["a", "c"]
    assert math.isclose(ranked[0].score, 0.9, rel_tol=1e-6)
