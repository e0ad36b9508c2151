"""Reasons a person believes: each item names its own one or two strongest terms, only
terms that lifted it; the recent pick named is the one that pulls that item; "trending
now" needs enough distinct users."""

from __future__ import annotations

import json

import numpy as np
import pytest

from api.responses import Recommendations
from api.service import Recommender, Result
from core.catalog import Catalog
from core.ranking import REASON_MIN_CONTRIBUTION, RankParams, rerank
from core.records import ItemRecord
from core.settings import RankingSettings
from core.state import RecentItem, UserState
from featurestore import FeatureStore
from tests.helpers import isolated_settings, make_head, publish
from tests.test_flow_logic import SETTINGS, T0, ev, message, run

NOW = 1_000_000.0
DIM = 16
GENRES = ["Sci-Fi", "Drama", "Comedy", "Crime", "Animation"]
# The defaults, plus the category and recent-item terms, so every kind of reason can show.
PARAMS = RankParams.from_settings(RankingSettings(weight_category=0.3, weight_recent=0.3))

# A reason's wording -> the term it stands for.
WORDING = {
    "because you": "recent",
    "often picked with": "covisit",
    "in line with": "session",
    "likely next after": "sequence",
    "you have been into": "category",
    "close to what you are exploring": "ann",
    "matches your long-term taste": "ann",
    "new: nobody had picked it": "new",
    "trending now": "popularity",
    "popular with everyone": "popularity",
}


def term_of(reason: str) -> str:
    return next(term for start, term in WORDING.items() if reason.startswith(start))


def synthetic_catalogue(n: int = 300, seed: int = 7) -> Catalog:
    """Items in five genres (vectors around a genre centre), skewed popularity with some
    items new since training, and co-visitation between neighbours of a genre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(GENRES), DIM))
    vecs = centres[np.arange(n) % len(GENRES)] + 0.9 * rng.normal(size=(n, DIM))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    popularity = rng.uniform(size=n) ** 2
    popularity[rng.uniform(size=n) < 0.1] = 0.0
    items = []
    for i in range(n):
        partners = [[f"m{(i + 5 * s) % n}", float(rng.uniform(0.2, 1.0))] for s in (1, 2, 3)]
        items.append(
            ItemRecord(
                f"m{i}",
                f"Film {i}",
                [GENRES[i % len(GENRES)]],
                float(popularity[i]),
                {"covisit": partners},
            )
        )
    return Catalog("v1", items, vecs, make_head(DIM))


def viewer(cat: Catalog, picks: list[int]) -> UserState:
    """A user who viewed ``picks`` a minute apart, the last one just now."""
    recent = [
        RecentItem(cat.items[r].item_id, NOW - 60 * (len(picks) - 1 - j), "view")
        for j, r in enumerate(picks)
    ]
    categories: dict[str, float] = {}
    for r in picks:
        for c in cat.items[r].categories:
            categories[c] = categories.get(c, 0.0) + 1.0
    vector = cat.vectors[picks].mean(axis=0)
    return UserState(
        "u",
        vector=vector,
        mass=float(len(picks)),
        last_ts=NOW,
        recent=recent,
        categories=categories,
    )


def candidates(cat: Catalog, state: UserState, n: int = 150) -> list[tuple[int, float]]:
    """The ANN's answer: the ``n`` items nearest the query, none the user picked."""
    query = cat.head.apply(state.vector)
    query /= np.linalg.norm(query)
    seen = {cat.index[r.item_id] for r in state.recent}
    ann = cat.vectors @ query
    order = [int(r) for r in np.argsort(-ann) if int(r) not in seen][:n]
    return [(r, float(ann[r])) for r in order]


def top10(picks: list[int]):
    cat = synthetic_catalogue()
    state = viewer(cat, picks)
    cands = candidates(cat, state)
    ranked = rerank(cands, cat, state, {}, PARAMS, NOW, 1.0, 10)
    everyone = rerank(cands, cat, state, {}, PARAMS, NOW, 1.0, len(cands))
    median = {t: float(np.median([r.terms[t] for r in everyone])) for t in ranked[0].terms}
    return cat, ranked, median


@pytest.mark.parametrize("picks", [[0], [0, 6, 12], [3, 8, 14, 21, 27]])
def test_each_item_gives_one_or_two_reasons_for_terms_that_lifted_it(picks):
    _, ranked, median = top10(picks)
    for r in ranked:
        assert 1 <= len(r.reasons) <= 2
        assert len(set(r.reasons)) == len(r.reasons)
        for reason in r.reasons:
            term = term_of(reason)
            assert r.terms[term] >= REASON_MIN_CONTRIBUTION, (reason, r.terms)
            assert r.terms[term] > median[term], (reason, r.terms, median)
        alike = [x for x in r.reasons if term_of(x) in ("recent", "session")]
        named = {x.split("Film ")[1].split(",")[0].split(" ")[0] for x in alike}
        assert len(named) == len(alike), r.reasons  # one pick is not named twice for it


@pytest.mark.parametrize("picks", [[0], [0, 6, 12], [3, 8, 14, 21, 27]])
def test_neighbouring_items_with_different_breakdowns_say_different_things(picks):
    _, ranked, _ = top10(picks)
    assert len({tuple(r.reasons) for r in ranked}) >= 4
    assert len({r.reasons[0] for r in ranked}) >= 3


def test_each_item_names_the_recent_pick_that_pulls_it():
    cat, ranked, _ = top10([0, 6, 12])
    named = {
        reason.rsplit("like ", 1)[1]
        for r in ranked
        for reason in r.reasons
        if reason.startswith("in line with your recent picks")
    }
    assert len(named) >= 2, named  # not the same pick for every item
    assert named <= {cat.items[p].title for p in (0, 6, 12)}


def test_one_users_purchase_never_makes_an_item_trending_now(tmp_path):
    lone = [ev("eve", "i1", T0, "purchase")]
    crowd = [ev(u, "i2", T0 + 1 + k, "view") for k, u in enumerate(("ann", "bob", "cem"))]
    assert SETTINGS.fold.trending_min_users == 3
    out = run([message(e, k) for k, e in enumerate(lone + crowd)])

    settings = isolated_settings(tmp_path / "var")
    store = FeatureStore.open(settings)
    try:
        publish(store, n=10, dim=8)
        store.write_trends(list(dict(out.trends).values()))
        catalogs = store.catalog_provider()
        catalogs.refresh()
        res = Recommender(settings, store, catalogs).recommend("newcomer", 10, now=T0 + 60)
        reasons = {res.catalog.items[r.row].item_id: r.reasons for r in res.items}
    finally:
        store.close()
    assert "trending now" not in reasons["i1"]  # one purchase, one user
    assert "trending now" in reasons["i2"]  # three distinct users
    assert [i for i, rs in reasons.items() if "trending now" in rs] == ["i2"]


def test_the_explained_terms_add_up_to_the_score_exactly_after_json():
    cat, ranked, _ = top10([3, 8, 14, 21, 27])
    res = Result("u", cat, ranked, "personalized", 1.0, 150)
    body = json.loads(Recommendations.from_result(res, "r1", explain=True).model_dump_json())
    plain = json.loads(Recommendations.from_result(res, "r1").model_dump_json())
    for item, shown in zip(body["items"], plain["items"], strict=True):
        terms = item["score_breakdown"]
        assert set(terms) == set(ranked[0].terms)  # each term once, no raw similarity
        assert sum(terms.values()) == item["score"] == shown["score"]
