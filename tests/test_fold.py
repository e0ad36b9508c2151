"""The decay fold, without Kafka or Qdrant."""

from __future__ import annotations

import dataclasses
import math
from array import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import ValidEvent
from core.fold import (
    FoldParams,
    compact_rows,
    decay_factor,
    decay_weights,
    decayed_add,
    fold_event,
    fold_events,
    mass_at,
    rebuild_vector,
)
from core.state import UserState

H = 3600.0
PARAMS = FoldParams(
    half_life=H,
    weights={"view": 1.0, "purchase": 5.0},
    recent_items=4,
    session_gap=1800.0,
    seen_cap=5,
)
VECS = {f"i{i}": np.eye(4, dtype=np.float32)[i % 4] * (1 + i // 4) for i in range(8)}
ROWS = {f"i{i}": i for i in range(8)}  # the catalogue's rows; "mystery" is not in it
CATS = {f"i{i}": ["A"] if i % 2 else ["B"] for i in range(8)}


def ev(
    item: str, ts: float, kind: str = "view", session: str | None = None, user: str = "u"
) -> ValidEvent:
    return ValidEvent(kind, user, item, ts, session)


def fold_all(events: list[ValidEvent], params: FoldParams = PARAMS) -> UserState:
    s = UserState("u")
    for e in events:
        fold_event(
            s, e, VECS.get(e.item_id), CATS.get(e.item_id, []), params, row=ROWS.get(e.item_id)
        )
    return s


def test_half_life_halves_the_weight():
    assert decay_factor(H, H) == pytest.approx(0.5)
    assert decay_factor(0.0, H) == 1.0
    np.testing.assert_allclose(decay_weights(np.array([0.0, H, 2 * H]), 2 * H, H), [0.25, 0.5, 1.0])


def test_decayed_add_is_order_independent():
    a = decayed_add(*decayed_add(0.0, 0.0, 1.0, 0.0, H), 2.0, H, H)
    b = decayed_add(*decayed_add(0.0, 0.0, 2.0, H, H), 1.0, 0.0, H)
    assert a == pytest.approx(b)
    assert a == pytest.approx((2.5, H))


def test_one_half_life_later_the_old_event_counts_half():
    s = fold_all([ev("i0", 0.0), ev("i1", H, "purchase")])
    np.testing.assert_allclose(s.vector, 0.5 * VECS["i0"] + 5.0 * VECS["i1"], rtol=1e-6)
    assert s.mass == pytest.approx(5.5)
    assert s.categories == pytest.approx({"B": 0.5, "A": 5.0})
    assert s.last_ts == H


def test_late_event_weighs_as_of_the_latest_time_and_never_moves_the_clock_back():
    s = fold_all([ev("i0", 2 * H), ev("i1", 0.0)])
    assert s.last_ts == 2 * H
    np.testing.assert_allclose(s.vector, VECS["i0"] + 0.25 * VECS["i1"], rtol=1e-6)
    assert [r.item_id for r in s.recent] == ["i1", "i0"]  # recent stays in time order


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(VECS)),
            st.floats(0, 10 * H),
            st.sampled_from(["view", "purchase"]),
        ),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_arrival_order_does_not_change_the_state(raw, rnd):
    events = [ev(i, t, k) for i, t, k in raw]
    shuffled = events[:]
    rnd.shuffle(shuffled)
    a = fold_all(sorted(events, key=lambda e: e.ts))
    b = fold_all(shuffled)
    np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-5)
    assert a.mass == pytest.approx(b.mass, rel=1e-6)
    assert a.last_ts == b.last_ts
    assert a.categories.keys() == b.categories.keys()
    for c in a.categories:
        assert a.categories[c] == pytest.approx(b.categories[c], rel=1e-6)
    assert a.event_count == b.event_count == len(events)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*sorted(VECS), "mystery"]),
            st.floats(0, 3 * H),
            st.sampled_from(["view", "purchase"]),
            st.sampled_from([None, None, "s1", "s2"]),
        ),
        min_size=1,
        max_size=14,
    ),
    st.lists(st.integers(1, 5), min_size=1, max_size=14),
    st.sampled_from([H, 60.0]),
)
def test_a_batch_folds_to_the_state_its_events_reach_one_by_one(raw, sizes, half_life):
    """``fold_events`` over micro-batches of any sizes (the dataflow's path) reaches what
    ``fold_event`` reaches one event at a time: vector, mass, categories (pruned as they
    decay: a 60 s half-life over hours), sessions, recent and seen items; late events
    and unknown items included."""
    params = dataclasses.replace(PARAMS, half_life=half_life)
    events = [ev(i, t, k, sid) for i, t, k, sid in raw]
    want = fold_all(events, params)
    got = UserState("u")
    k = 0
    for size in sizes * len(events):
        batch = events[k : k + size]
        if not batch:
            break
        fold_events(
            got,
            batch,
            [VECS.get(e.item_id) for e in batch],
            [CATS.get(e.item_id, []) for e in batch],
            [ROWS.get(e.item_id) for e in batch],
            params,
        )
        k += size
    if want.vector is None:
        assert got.vector is None
    else:
        np.testing.assert_allclose(got.vector, want.vector, rtol=1e-5, atol=1e-6)
    assert got.mass == pytest.approx(want.mass, rel=1e-9)
    assert got.categories == pytest.approx(want.categories, rel=1e-9)
    assert (got.last_ts, got.event_count, got.unknown_items) == (
        want.last_ts,
        want.event_count,
        want.unknown_items,
    )
    assert (got.session_id, got.session_start, got.session_events) == (
        want.session_id,
        want.session_start,
        want.session_events,
    )
    assert got.recent == want.recent and list(got.seen_rows) == list(want.seen_rows)


def test_a_batch_that_fails_leaves_the_state_as_it_was():
    s = fold_all([ev("i0", 0.0), ev("i1", 10.0)])
    before = s.to_snapshot()
    bad = np.zeros(7, dtype=np.float32)  # another dimension: the product fails
    with pytest.raises(ValueError):
        fold_events(
            s, [ev("i2", 20.0), ev("i3", 30.0)], [VECS["i2"], bad], [[], []], [2, 3], PARAMS
        )
    assert s.to_snapshot() == before


def test_recent_items_are_capped_to_the_newest():
    s = fold_all([ev(f"i{i}", float(i)) for i in range(7)])
    assert [r.item_id for r in s.recent] == ["i3", "i4", "i5", "i6"]


def test_sessions_follow_ids_or_inactivity_gaps():
    s = fold_all([ev("i0", 0.0), ev("i1", 60.0), ev("i2", 60.0 + 1801)])
    assert s.session_events == 1 and s.session_start == 60.0 + 1801
    s = fold_all(
        [ev("i0", 0.0, session="a"), ev("i1", 10.0, session="a"), ev("i2", 20.0, session="b")]
    )
    assert (s.session_id, s.session_events, s.session_start) == ("b", 1, 20.0)
    # a late event of the current session counts in it and may move its start back
    s = fold_all([ev("i0", 100.0, session="a"), ev("i1", 50.0, session="a")])
    assert (s.session_events, s.session_start) == (2, 50.0)


def test_unknown_items_are_counted_and_kept_but_do_not_move_the_vector():
    s = fold_all([ev("i0", 0.0), ev("mystery", 1.0)])
    assert s.unknown_items == 1 and s.event_count == 2
    np.testing.assert_allclose(s.vector, VECS["i0"] * decay_factor(1.0, H), rtol=1e-6)
    assert s.recent[-1].item_id == "mystery"


def test_mass_at_decays_to_the_query_time():
    s = fold_all([ev("i0", 0.0, "purchase")])
    assert mass_at(s, H, H) == pytest.approx(2.5)
    assert mass_at(s, -10.0, H) == pytest.approx(5.0)  # never grows for times before last_ts
    assert mass_at(UserState("new"), 0.0, H) == 0.0


def test_rebuild_moves_the_user_into_a_new_item_space():
    s = fold_all([ev("i0", 0.0), ev("i1", H, "purchase")])
    new_space = {k: -v for k, v in VECS.items()}
    rebuild_vector(s, new_space.get, PARAMS, "v2", np.arange(8, dtype=np.int32))
    np.testing.assert_allclose(s.vector, -(0.5 * VECS["i0"] + 5.0 * VECS["i1"]), rtol=1e-6)
    assert s.model_version == "v2" and s.mass == pytest.approx(5.5)


def test_seen_rows_remember_every_item_newest_last_within_the_cap():
    s = fold_all([ev("i0", 0.0), ev("i1", 1.0), ev("mystery", 2.0), ev("i2", 3.0)])
    assert list(s.seen_rows) == [0, 1, 2]  # an item outside the catalogue has no row
    s = fold_all([ev("i0", 0.0), ev("i1", 1.0), ev("i0", 2.0, "purchase"), ev("i0", 3.0)])
    assert list(s.seen_rows) == [0, 1, 0]  # a repeat of the last item adds nothing
    assert list(compact_rows(s.seen_rows, 5)) == [1, 0]  # each where it was seen last
    s = fold_all([ev(f"i{i}", float(i)) for i in range(8)])
    # seen_cap=5: past 5 + 5 // 4 rows (at i6), the newest 5 distinct were kept
    assert list(s.seen_rows) == [2, 3, 4, 5, 6, 7]
    s = fold_all([ev(f"i{i % 3}", float(i)) for i in range(10)])
    assert set(s.seen_rows) == {0, 1, 2} and len(s.seen_rows) <= 6  # repeats: bounded too
    none = FoldParams(H, PARAMS.weights, 4, 1800.0, seen_cap=0)
    assert not fold_all([ev("i0", 0.0)], none).seen_rows


def test_compacting_keeps_the_newest_distinct_rows_in_order():
    rows = array("i", [5, 1, 5, 2, 1, 3, 5])
    assert list(compact_rows(rows, 10)) == [2, 1, 3, 5]
    assert list(compact_rows(rows, 2)) == [3, 5]
    assert list(compact_rows(array("i"), 3)) == []


def test_a_model_switch_maps_seen_rows_through_item_ids():
    from core.catalog import RowMaps, row_map

    s = fold_all([ev("i3", 0.0), ev("i5", 1.0), ev("i1", 2.0)])
    # v2 dropped i5 and put the others elsewhere: row r of v1 is item i{r}
    v2_index = {"i1": 0, "i3": 7, "i0": 2}
    rebuild_vector(s, VECS.get, PARAMS, "v2", row_map([f"i{r}" for r in range(8)], v2_index))
    assert list(s.seen_rows) == [7, 0] and s.model_version == "v2"
    # an old version the store no longer holds: its rows cannot be read, they go
    rebuild_vector(s, VECS.get, PARAMS, "v3", None)
    assert not s.seen_rows

    reads: list[str] = []

    def item_ids(version: str) -> list[str] | None:
        reads.append(version)
        return [f"i{r}" for r in range(8)] if version == "v1" else None

    class Cat:  # the two fields RowMaps reads of a catalogue
        version, index = "v2", v2_index

    maps = RowMaps(item_ids)
    first = maps.get("v1", Cat())  # type: ignore[arg-type]
    assert first is maps.get("v1", Cat()) and reads == ["v1"]  # cached per version pair
    assert maps.get("gone", Cat()) is None and maps.get(None, Cat()) is None  # type: ignore[arg-type]


def test_empty_state_has_no_clock():
    assert UserState("u").last_ts == -math.inf


def test_recovery_snapshots_round_trip_user_and_trend_state():
    from core.state import RecentItem, Trend, UserState

    s = UserState(
        "u1",
        np.arange(4, dtype=np.float32),
        2.5,
        -math.inf,
        {"Drama": 0.5},
        [RecentItem("i1", 1.0, "view"), RecentItem("i2", 2.0, "click")],
        "s1",
        1.0,
        2,
        7,
        1,
        "v3",
        {0: 5, 2: 9},
        "log-a",
        array("i", [7, 3, 12]),
    )
    back = UserState.from_snapshot(s.to_snapshot())
    np.testing.assert_array_equal(back.vector, s.vector)
    back.vector = s.vector
    assert back == s
    assert UserState.from_snapshot(UserState("u2").to_snapshot()) == UserState("u2")
    via_payload = UserState.from_payload(s.to_payload(), s.vector.tolist())
    assert via_payload.seen_rows == s.seen_rows == array("i", [7, 3, 12])
    t = Trend("i1", 3.5, 10.0, {1: 4})
    assert Trend.from_snapshot(t.to_snapshot()) == t
