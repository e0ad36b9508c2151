"""Query blending, re-ranking and reasons, on a hand-made catalogue."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from api.responses import Recommendations, encode_recommendations
from api.service import Result
from core.catalog import Catalog
from core.ranking import RankParams, ago, build_query, cold_candidates, rerank
from core.records import ItemRecord, Profile, UserHead
from core.settings import RankingSettings
from core.state import RecentItem, UserState

NOW = 1_000_000.0
DIM = 4


def identity_head() -> UserHead:
    z = np.zeros
    return UserHead(
        z((DIM, 1), np.float32), z(1, np.float32), z((1, DIM), np.float32), z(DIM, np.float32)
    )


def catalog() -> Catalog:
    e = np.eye(DIM, dtype=np.float32)
    # x0 and x1 point the same way; y0 is orthogonal; z0 and z1 are two more directions
    vecs = np.stack([e[0], e[0], e[1], e[2], e[3]])
    items = [
        ItemRecord("x0", "Alien", ["Sci-Fi"], 0.1),
        ItemRecord("x1", "Aliens", ["Sci-Fi", "Action"], 0.1),
        ItemRecord("y0", "Casablanca", ["Drama"], 0.1),
        ItemRecord("z0", "Titanic", ["Drama", "Romance"], 0.9),
        ItemRecord("z1", "Fargo", ["Crime"], 0.2),
    ]
    return Catalog("v1", items, vecs, identity_head())


def user(recent=(), categories=None, vector=None, mass=0.0) -> UserState:
    return UserState(
        "u",
        vector=None if vector is None else np.asarray(vector, np.float32),
        mass=mass,
        last_ts=NOW,
        categories=categories or {},
        recent=[RecentItem(i, t, k) for i, t, k in recent],
    )


# The maths tests' own weights: every term on, so each can be seen to move the order.
TEST_RANKING = RankingSettings(
    weight_category=0.3,
    weight_recent=0.8,
    weight_popularity=0.15,
    recent_similarity_half_life_seconds=1800.0,
    weight_covisit=0.0,
    covisit_items=10,
    covisit_half_life_seconds=86400.0,
    weight_new_item=0.0,
    weight_session=0.0,
)


def rank_params(**overrides: float) -> RankParams:
    return RankParams.from_settings(TEST_RANKING, **overrides)


DEFAULT_PARAMS = rank_params()


def ranked_ids(cands, state, trending=None, params=DEFAULT_PARAMS, k=5):
    cat = catalog()
    out = rerank(cands, cat, state, trending or {}, params, NOW, 1.0, k)
    return [cat.items[r.row].item_id for r in out], out


def test_cold_user_has_no_query():
    assert build_query(None, None, catalog(), NOW, 3600, 3.0, 1e-4).vector is None


def test_profile_only_and_realtime_only():
    cat = catalog()
    q = build_query(
        None, Profile("u", np.array([2, 0, 0, 0], np.float32), []), cat, NOW, 3600, 3.0, 1e-4
    )
    np.testing.assert_allclose(q.vector, [1, 0, 0, 0])
    assert q.realtime_weight == 0.0
    q = build_query(user(vector=[0, 3, 0, 0], mass=1.0), None, cat, NOW, 3600, 3.0, 1e-4)
    np.testing.assert_allclose(q.vector, [0, 1, 0, 0])
    assert q.realtime_weight == 1.0


def test_realtime_share_grows_with_fresh_evidence_and_fades_with_time():
    cat = catalog()
    profile = Profile("u", np.array([1, 0, 0, 0], np.float32), [])
    light = build_query(user(vector=[0, 1, 0, 0], mass=1.0), profile, cat, NOW, 3600, 3.0, 1e-4)
    heavy = build_query(user(vector=[0, 1, 0, 0], mass=9.0), profile, cat, NOW, 3600, 3.0, 1e-4)
    later = build_query(
        user(vector=[0, 1, 0, 0], mass=9.0), profile, cat, NOW + 3 * 3600, 3600, 3.0, 1e-4
    )
    assert light.realtime_weight == pytest.approx(0.25)
    assert heavy.realtime_weight == pytest.approx(0.75)
    assert later.realtime_weight == pytest.approx(9 / 8 / (9 / 8 + 3))
    assert heavy.vector[1] > light.vector[1] > 0
    assert np.linalg.norm(heavy.vector) == pytest.approx(1.0)


def test_items_like_the_one_just_watched_rise_and_say_why():
    state = user(recent=[("x0", NOW - 120, "view")])
    ids, out = ranked_ids([(1, 0.5), (2, 0.5), (4, 0.5)], state)
    assert ids[0] == "x1"
    assert out[0].reasons[0] == "because you viewed Alien 2 minutes ago"
    assert out[0].terms["recent"] == pytest.approx(0.8 * 2 ** (-120 / 1800), rel=1e-5)


def test_the_newest_recent_item_counts_most():
    alien_last = user(recent=[("y0", NOW - 10, "view"), ("x0", NOW - 10, "view")])
    alien_before = user(recent=[("x0", NOW - 10, "view"), ("y0", NOW - 10, "view")])
    _, last = ranked_ids([(1, 0.5)], alien_last)
    _, before = ranked_ids([(1, 0.5)], alien_before)
    assert before[0].terms["recent"] == pytest.approx(0.7 * last[0].terms["recent"])


def test_the_recent_boost_fades():
    fresh = ranked_ids([(1, 0.5), (2, 0.52)], user(recent=[("x0", NOW - 60, "view")]))[0]
    stale = ranked_ids([(1, 0.5), (2, 0.52)], user(recent=[("x0", NOW - 10 * 3600, "view")]))[0]
    assert fresh[0] == "x1" and stale[0] == "y0"


def test_category_affinity_reorders_equal_candidates_and_names_the_category():
    state = user(categories={"Drama": 3.0, "Sci-Fi": 1.0})
    ids, out = ranked_ids([(4, 0.5), (2, 0.5)], state)
    assert ids == ["y0", "z1"]
    assert "you have been into Drama lately (75% of your recent activity)" in out[0].reasons


def test_popularity_and_trending_break_ties_with_the_right_words():
    ids, out = ranked_ids([(2, 0.5), (3, 0.5)], user())
    assert ids[0] == "z0" and "popular with everyone" in out[0].reasons
    ids, out = ranked_ids([(2, 0.5), (3, 0.5)], user(), trending={2: 1.0})
    assert ids[0] == "y0" and "trending now" in out[0].reasons


def test_scores_are_sorted_and_k_respected():
    _, out = ranked_ids([(i, 0.1 * i) for i in range(5)], user(), k=3)
    assert len(out) == 3
    assert [r.score for r in out] == sorted((r.score for r in out), reverse=True)
    assert all(r.reasons for r in out)


def test_cold_candidates_prefer_trending_then_popular_and_skip_seen():
    cat = catalog()
    assert [r for r, _ in cold_candidates(cat, {}, set(), 3)] == [3, 4, 0]
    assert [r for r, _ in cold_candidates(cat, {2: 1.0}, {3}, 3)] == [2, 4, 0]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "just now"),
        (61, "1 minute ago"),
        (3 * 3600 + 5, "3 hours ago"),
        (2 * 86400, "2 days ago"),
    ],
)
def test_ago(seconds, text):
    assert ago(seconds) == text


def test_a_new_item_is_lifted_over_an_equally_close_known_one_and_says_so():
    cat = catalog()
    cat.popularity[4] = 0.0  # z1 has no training events
    cands = [(2, 0.5), (4, 0.5)]
    params = rank_params(weight_popularity=0.0, weight_category=0.0, weight_new_item=0.4)
    out = rerank(cands, cat, user(), {}, params, NOW, 1.0, 2)
    assert [cat.items[r.row].item_id for r in out] == ["z1", "y0"]
    assert "new: nobody had picked it when the model was trained" in out[0].reasons
    out = rerank(
        cands, cat, user(), {}, rank_params(weight_popularity=0.0, weight_category=0.0), NOW, 1.0, 2
    )
    assert "new: nobody had picked it when the model was trained" not in out[0].reasons


def test_the_session_term_lifts_items_close_to_the_recent_picks_even_after_a_pause():
    # The user picked Alien and then Casablanca a day ago: the time-decayed query has faded,
    # but the session (pooled by position) still points at them, newest first.
    day_ago = NOW - 86400
    state = user(recent=[("x0", day_ago - 60, "rating"), ("y0", day_ago, "rating")])
    cands = [(3, 0.5), (1, 0.5)]  # Titanic, Aliens: equally close to the query
    params = rank_params(
        weight_popularity=0.0, weight_category=0.0, weight_recent=0.0, weight_session=0.8
    )
    ids, out = ranked_ids(cands, state, params=params, k=2)
    assert ids == ["x1", "z0"]
    assert "in line with your recent picks, like Alien" in out[0].reasons
    ids, out = ranked_ids(cands, state, params=replace(params, weight_session=0.0), k=2)
    assert ids == ["z0", "x1"]  # candidate order on a tie
    assert not any("recent picks" in r for r in out[0].reasons)


@pytest.mark.parametrize("explain", [False, True])
def test_the_response_json_is_the_documented_models(explain):
    """The route's JSON (msgspec) is what the pydantic models that document it give."""
    cat = catalog()
    state = user(recent=[("x0", NOW - 60, "view")], categories={"Drama": 1.0})
    cands = [(1, 0.9), (2, 0.1), (3, 0.3), (4, 0.05)]
    ranked = rerank(cands, cat, state, {3: 1.0}, DEFAULT_PARAMS, NOW, 0.61234567, 3)
    result = Result("u", cat, ranked, "personalized", 0.61234567, len(cands), "b")
    documented = Recommendations.from_result(result, "req-1", explain)
    got = json.loads(encode_recommendations(result, "req-1", explain))
    assert got == json.loads(documented.model_dump_json(exclude_none=True))
    assert list(got) == list(Recommendations.model_fields)
    assert ("score_breakdown" in got["items"][0]) is explain
