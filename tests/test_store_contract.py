"""The same contract for both adapters: embedded Qdrant Edge and qdrant-client.

qdrant-client's ":memory:" mode speaks the server API, so the server adapter is
tested without a server.
"""

from __future__ import annotations

import math
import uuid

import msgspec
import numpy as np
import pytest

from core.events import ErasureMarker
from core.state import RecentItem, Trend, UserState
from featurestore import FeatureStore, StoreError, StoreLocked
from featurestore import layout as col
from featurestore.edge import EdgeBackend
from featurestore.store import ErasureRecord, UserPoints
from tests import helpers
from tests.helpers import publish

DIM = 8


def make_model(version: str, n: int = 50, dim: int = DIM, seed: int = 0):
    return helpers.make_model(version, n=n, dim=dim, seed=seed)


def test_publish_activate_and_catalog_round_trip(store):
    assert store.active_version() is None
    record, items, vecs, _ = publish(store)
    assert store.active_version() == "v1"
    model = store.model("v1")
    assert model is not None and model.items == len(items) and model.profiles == 5
    assert model.metrics == {"recall_at_10": 0.1}
    x = np.random.default_rng(1).normal(size=DIM).astype(np.float32)
    np.testing.assert_allclose(model.head.apply(x), record.head.apply(x), atol=1e-6)

    cat = store.load_catalog("v1")
    assert cat.version == "v1" and len(cat.items) == len(items)
    for i, it in enumerate(items):
        np.testing.assert_allclose(cat.vector(it.item_id), vecs[i], atol=1e-6)
        assert cat.categories(it.item_id) == it.categories
        assert cat.title(it.item_id) == it.title
        assert cat.items[cat.index[it.item_id]].extra == {"year": 1990 + i}
    assert cat.vector("nope") is None


def test_search_returns_nearest_first_and_excludes(store):
    _, _, vecs, _ = publish(store)
    cat = store.load_catalog("v1")
    hits = store.search_items("v1", vecs[3], limit=5)
    top = [cat.items[row].item_id for row, _ in hits]
    assert top[0] == "i3"
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    hits = store.search_items("v1", vecs[3], limit=5, exclude_rows=[cat.index["i3"]])
    assert "i3" not in [cat.items[row].item_id for row, _ in hits]


def test_read_item_returns_a_published_items_record_and_vector(store):
    _, items, vecs, _ = publish(store)
    found = store.read_item("v1", "i7")
    assert found is not None
    record, vector = found
    assert (record.item_id, record.title, record.categories) == (
        "i7",
        items[7].title,
        items[7].categories,
    )
    np.testing.assert_allclose(vector, vecs[7], atol=1e-6)
    assert store.read_item("v1", "nope") is None
    assert store.read_item("v9", "i7") is None  # no such version


def test_versions_live_side_by_side(store):
    publish(store, "v1")
    record2, items2, vecs2, _ = make_model("v2", seed=1)
    store.publish_model(record2, items2, vecs2, [])
    assert store.active_version() == "v1"  # publishing does not switch
    store.activate("v2")
    assert store.active_version() == "v2"
    assert [m.version for m in store.list_models()] == ["v1", "v2"]
    np.testing.assert_allclose(store.load_catalog("v2").vector("i0"), vecs2[0], atol=1e-6)
    with pytest.raises(StoreError, match="live"):
        store.publish_model(record2, items2, vecs2, [])
    with pytest.raises(StoreError, match="not published"):
        store.activate("v9")


def test_dimension_mismatch_is_a_clear_error(store):
    publish(store, "v1")
    record, items, vecs, _ = make_model("v2", dim=4)
    with pytest.raises(StoreError, match="4-d"):
        store.publish_model(record, items, vecs, [])


def test_user_state_round_trip(store):
    publish(store)
    s = UserState(
        user_id="u-42",
        vector=np.arange(DIM, dtype=np.float32),
        mass=2.5,
        last_ts=1_700_000_000.5,
        categories={"Sci-Fi": 1.25, "Drama": 0.5},
        recent=[
            RecentItem("i1", 1_699_999_000.0, "view"),
            RecentItem("i2", 1_700_000_000.5, "purchase"),
        ],
        session_id="s9",
        session_start=1_699_999_000.0,
        session_events=2,
        event_count=7,
        unknown_items=1,
        model_version="v1",
        offsets={0: 10, 3: 99},
    )
    fresh = UserState(user_id="new")  # no vector, no events yet
    store.write_user_states([s, fresh])
    got = store.read_user_states(["u-42", "new", "missing"])
    assert set(got) == {"u-42", "new"}
    g = got["u-42"]
    np.testing.assert_allclose(g.vector, s.vector)
    assert (g.mass, g.last_ts, g.categories, g.recent) == (
        s.mass,
        s.last_ts,
        s.categories,
        s.recent,
    )
    assert (g.session_id, g.session_start, g.session_events) == ("s9", s.session_start, 2)
    assert (g.event_count, g.unknown_items, g.model_version, g.offsets) == (
        7,
        1,
        "v1",
        {0: 10, 3: 99},
    )
    assert got["new"].vector is None and got["new"].last_ts == -math.inf
    assert store.read_user_state("missing") is None


def test_a_user_state_stored_with_the_user_id_beside_its_features_still_reads(store):
    publish(store)
    s = UserState("u-7", vector=np.ones(DIM, dtype=np.float32), mass=1.0, event_count=3)
    payload = s.to_payload()
    features = msgspec.json.decode(payload["features"])
    del features["user_id"]
    older = {"user_id": "u-7", "features": msgspec.json.encode(features).decode()}
    store.backend.upsert(col.USER_STATE, [col.user_point("u-7")], [s.vector], [older])
    got = store.read_user_state("u-7")
    assert got is not None and got.user_id == "u-7" and got.event_count == 3


def test_recent_items_are_stored_as_arrays_and_states_written_so_before_read():
    s = UserState("u-8", recent=[RecentItem("i1", 100.0, "view"), RecentItem("i2", 160.5, "click")])
    features = msgspec.json.decode(s.to_payload()["features"])
    assert features["recent"] == [["i1", 100.0, "view"], ["i2", 160.5, "click"]]
    features["recent"] = [["i3", 90, "purchase"]]  # an integer time, as a JSON writer may leave it
    got = UserState.from_payload({"features": msgspec.json.encode(features).decode()}, None)
    assert got.recent == [RecentItem("i3", 90.0, "purchase")]
    assert UserState.from_snapshot(s.to_snapshot()).recent == s.recent


def test_point_ids_are_rfc_name_based_uuids():
    namespace = uuid.UUID("6f1c1d1e-8a0b-4c7e-9d55-3f0a2b7e4c10")
    for key in ("u1", "", "é-ü 42", "x" * 300):
        assert col.user_point(key) == str(uuid.uuid5(namespace, f"user:{key}"))
        assert col.item_point(key) == str(uuid.uuid5(namespace, f"item:{key}"))


def test_profiles(store):
    _, _, vecs, _ = publish(store)
    p = store.read_profile("v1", "u2")
    assert p is not None and p.seen == ["i2", "i3"]
    np.testing.assert_allclose(p.vector, vecs[2], atol=1e-6)
    assert store.read_profile("v1", "nobody") is None


def test_profile_users_lists_profiles_up_to_a_limit(store):
    publish(store, n_profiles=5)
    everyone = store.profile_users("v1", 100)
    assert sorted(everyone) == [(f"u{j}", 2) for j in range(5)]
    some = store.profile_users("v1", 3)
    assert len(some) == 3 and set(some) <= set(everyone)


def test_trends_ranked_by_decayed_score(store):
    now = 10_000.0
    store.write_trends(
        [Trend("old-hot", 10.0, now - 3600), Trend("new-warm", 6.0, now), Trend("cold", 1.0, now)]
    )
    top = store.top_trends(2, now=now, half_life=1800.0)
    assert [t.item_id for t in top] == ["new-warm", "old-hot"]
    assert top[1].score == pytest.approx(2.5)


def test_edge_store_survives_restart_and_is_exclusive(tmp_path):
    first = FeatureStore(EdgeBackend(tmp_path / "s"))
    publish(first)
    first.write_user_states([UserState("u1", np.ones(DIM, np.float32), 1.0, 5.0)])
    with pytest.raises(StoreLocked, match="another process"):
        EdgeBackend(tmp_path / "s")
    first.close()
    again = FeatureStore(EdgeBackend(tmp_path / "s"))
    assert again.active_version() == "v1"
    assert again.read_user_state("u1").last_ts == 5.0
    again.close()


def test_filtered_search_applies_category_and_availability_rules_in_the_engine(store):
    """Filters run inside the ANN search: asking for 5 candidates among a rare subset
    still returns 5 of that subset, not whatever survives a post-filter."""
    from featurestore.backend import ItemFilter

    record, items, vecs, profiles = make_model("v1", n=200)
    for i, it in enumerate(items):
        it.extra["available"] = i % 10 != 0  # every tenth item is out of stock
        if i % 20 == 3:
            it.categories = [*it.categories, "Rare"]
    store.publish_model(record, items, vecs, profiles)
    store.activate("v1")
    cat = store.load_catalog("v1")
    assert not cat.available[0] and cat.available[1]
    q = vecs[0]

    rare = store.search_items("v1", q, 5, item_filter=ItemFilter(include_categories=("Rare",)))
    assert len(rare) == 5 and all("Rare" in items[r].categories for r, _ in rare)

    no_scifi = store.search_items(
        "v1", q, 50, item_filter=ItemFilter(exclude_categories=("Sci-Fi",))
    )
    assert len(no_scifi) == 50 and all("Sci-Fi" not in items[r].categories for r, _ in no_scifi)

    avail = store.search_items("v1", q, 200, item_filter=ItemFilter(available_only=True))
    assert len(avail) == 180 and all(r % 10 for r, _ in avail)
    both = store.search_items(
        "v1",
        q,
        10,
        exclude_rows=[3],
        item_filter=ItemFilter(("Rare",), ("Drama",), available_only=True),
    )
    assert both and all(
        "Rare" in items[r].categories and "Drama" not in items[r].categories and r % 10 and r != 3
        for r, _ in both
    )
    assert store.search_items("v1", q, 5, item_filter=ItemFilter()) == store.search_items(
        "v1", q, 5
    )


def test_delete_removes_points_and_ignores_missing_ones(store):
    publish(store)
    name = col.profiles_collection("v1")
    u0, u1, nobody = (col.user_point(u) for u in ("u0", "u1", "nobody"))
    store.backend.delete(name, [u0, nobody])
    store.backend.delete(name, [])
    assert [p.id for p in store.backend.retrieve(name, [u0, u1])] == [u1]
    assert store.backend.count(name) == 4


def test_erase_user_records_the_erasure_and_deletes_state_and_every_profile(store):
    publish(store, "v1")
    publish(store, "v2", seed=1)
    old = UserState("u1", np.ones(DIM, np.float32), 1.0, 5.0, event_count=3, offsets={0: 5})
    old.log_id = "topic-A"
    store.write_user_states([old, UserState("u2", np.ones(DIM, np.float32), 1.0, 5.0)])
    marker = ErasureMarker("u1", 1_700_000_000.0, before={0: 7, 1: 4, 2: 0})
    record = ErasureRecord.at(marker, 0, 9, "topic-A")
    assert record.offsets == {0: 9, 1: 3}  # its own partition: up to the marker itself

    assert store.user_points("u1") == UserPoints(True, ["v1", "v2"])
    assert store.user_points("nobody") == UserPoints(False, [])
    assert store.erase_user("u1", record) == UserPoints(True, ["v1", "v2"])
    assert store.user_points("u1") == UserPoints(False, [])
    assert store.read_user_state("u1") is None
    assert store.read_profile("v1", "u1") is None and store.read_profile("v2", "u1") is None
    assert store.read_user_state("u2") is not None and store.read_profile("v1", "u2") is not None
    assert store.read_erasure("u1") == record and store.read_erasure("u2") is None
    assert store.erase_user("u1", record) == UserPoints(False, [])  # idempotent

    # a user folded after the erasure (past every offset it names) is a new user: kept
    fresh = record.fresh_state("u1")
    assert fresh.offsets == {0: 9, 1: 3} and fresh.log_id == "topic-A"
    fresh.offsets[0], fresh.event_count = 12, 1
    store.write_user_states([fresh])
    assert store.erase_user("u1", record) == UserPoints(False, [])
    assert store.read_user_state("u1").event_count == 1

    # an older marker read again (a replay) keeps the later offsets already recorded
    older = ErasureRecord.at(ErasureMarker("u1", 1_600_000_000.0), 0, 4, "topic-A")
    store.erase_user("u1", older)
    assert store.read_erasure("u1") == record
    # a recreated topic (another id): the new record replaces the old one
    other = ErasureRecord.at(ErasureMarker("u1", 1_800_000_000.0), 2, 1, "topic-B")
    store.erase_user("u1", other)
    assert store.read_erasure("u1") == other


def test_publishing_leaves_out_the_profiles_of_erased_users(store):
    publish(store, "v1")
    store.erase_user("u3", ErasureRecord.at(ErasureMarker("u3", 1.0), 0, 0, None))
    record, items, vecs, profiles = make_model("v2", seed=1)
    store.publish_model(record, items, vecs, profiles)
    assert store.model("v2").profiles == 4
    assert store.read_profile("v2", "u3") is None and store.read_profile("v2", "u4") is not None
    assert "u3" not in [u for u, _ in store.profile_users("v2", 10)]
