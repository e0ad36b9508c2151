"""The dataflow's logic, wired as in production (``dataflow.flow.build_flow``) between
Bytewax's testing source and sinks: no broker, no store, milliseconds a test. What the
flow does against the real broker and store is in tests/test_dataflow_integration.py,
tests/test_stream_guarantees.py and tests/test_bad_input.py."""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Message
from prometheus_client import REGISTRY

from core.catalog import Catalog, CatalogProvider
from core.events import ValidEvent
from core.fold import FoldParams, decayed_add, fold_event
from core.settings import Settings
from core.state import Trend, UserState
from dataflow.flow import Folders, Sinks, build_flow
from featurestore.store import ErasureRecord
from tests.helpers import make_model

T0 = 1_700_000_000.0
TOPIC = "events"
SETTINGS = Settings().with_values(trend_emit_seconds=0.0)
RECORD, ITEMS, VECS, _ = make_model("v1", n=10, dim=8)
CATALOG = Catalog("v1", ITEMS, VECS, RECORD.head)


def message(
    body: dict | bytes, offset: int, partition: int = 0, key: bytes | None = b"k"
) -> Message:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Message(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        timestamp=(1, int(T0 * 1000) + offset),
    )


def ev(user: str, item: str, ts: float, kind: str = "view") -> dict:
    return {"event_type": kind, "user_id": user, "item_id": item, "timestamp": ts}


@dataclass
class Stored:
    """The store's read side, as the folds see it: what earlier runs wrote."""

    users: dict[str, UserState] = field(default_factory=dict)
    trends: dict[str, Trend] = field(default_factory=dict)
    erasures: dict[str, ErasureRecord] = field(default_factory=dict)

    def read_user_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        return {u: self.users[u] for u in user_ids if u in self.users}

    def read_erasures(self, user_ids: Sequence[str]) -> dict[str, ErasureRecord]:
        return {u: self.erasures[u] for u in user_ids if u in self.erasures}

    def item_ids(self, version: str) -> list[str] | None:
        return [it.item_id for it in ITEMS] if version == "v1" else None

    def read_trends(self, item_ids: Sequence[str]) -> dict[str, Trend]:
        return {i: self.trends[i] for i in item_ids if i in self.trends}


@dataclass
class Out:
    """What reached each sink."""

    dead: list = field(default_factory=list)
    users: list[tuple[str, UserState]] = field(default_factory=list)
    trends: list[tuple[str, Trend]] = field(default_factory=list)

    def user(self, user_id: str) -> UserState:
        """The last state written for ``user_id``."""
        return [s for u, s in self.users if u == user_id][-1]

    def trend(self, item_id: str) -> Trend:
        return [t for i, t in self.trends if i == item_id][-1]


def run(
    msgs: list[Message],
    stored: Stored | None = None,
    log_id: str | None = None,
    recovery: RecoveryConfig | None = None,
    settings: Settings = SETTINGS,
) -> Out:
    out = Out()
    sinks = Sinks(TestingSink(out.dead), TestingSink(out.users), TestingSink(out.trends))
    catalogs = CatalogProvider(lambda: "v1", lambda version: CATALOG)
    folders = Folders.create(settings, stored or Stored(), catalogs, log_id)
    flow = build_flow(settings, TestingSource(msgs, batch_size=4), sinks, folders)
    run_main(flow, epoch_interval=timedelta(seconds=10), recovery_config=recovery)
    return out


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def reference(events: list[dict]) -> UserState:
    """The pure fold of one user's events, in order."""
    params = FoldParams.from_settings(SETTINGS)
    s = UserState(events[0]["user_id"], model_version="v1")
    for e in events:
        v = ValidEvent(e["event_type"], e["user_id"], e["item_id"], e["timestamp"], None)
        i = CATALOG.index[v.item_id]
        fold_event(s, v, CATALOG.vectors[i], CATALOG.items[i].categories, params, row=i)
    return s


def test_valid_events_fold_into_each_users_state():
    ann = [ev("ann", "i1", T0), ev("ann", "i2", T0 + 5, "click"), ev("ann", "i3", T0 + 9)]
    bob = [ev("bob", "i4", T0 + 1, "purchase")]
    msgs = [message(e, k) for k, e in enumerate(ann)] + [message(bob[0], 0, partition=1)]
    folded = metric("recsys_events_folded_total")

    out = run(msgs)

    got, want = out.user("ann"), reference(ann)
    np.testing.assert_allclose(got.vector, want.vector, rtol=1e-6)
    assert (got.event_count, got.offsets, got.model_version) == (3, {0: 2}, "v1")
    assert [r.item_id for r in got.recent] == ["i1", "i2", "i3"]
    assert list(got.seen_rows) == list(want.seen_rows) == [1, 2, 3]  # catalogue rows
    assert got.categories == pytest.approx(want.categories)
    assert out.user("bob").offsets == {1: 0} and out.user("bob").event_count == 1
    assert metric("recsys_events_folded_total") - folded == 4
    assert out.dead == []


def test_a_bad_message_reaches_the_dead_letter_sink_with_its_reason():
    bad = b"{not json"
    msgs = [message(ev("ann", "i1", T0), 0), message(bad, 1, key=b"raw")]
    before = metric("recsys_events_dead_lettered_total", reason="malformed_json")

    out = run(msgs)

    (dead,) = out.dead
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (b"raw", bad)  # the original bytes
    assert headers["dlq.kind"] == b"malformed_json" and headers["dlq.reason"]
    assert headers["dlq.source"] == f"{TOPIC}:0:1".encode()
    assert metric("recsys_events_dead_lettered_total", reason="malformed_json") - before == 1
    assert out.user("ann").event_count == 1  # the good message still folds


def test_replayed_offsets_are_skipped():
    seen = array("i", [4, 0, 2, 1, 5, 3])  # offsets 0-5 folded, in another order
    ann = UserState("ann", event_count=6, offsets={0: 5}, model_version="v1", seen_rows=seen)
    stored = Stored(users={"ann": ann})
    e = [ev("ann", f"i{k}", T0 + k) for k in range(8)]
    msgs = [message(e[k], k) for k in range(8)] + [message(e[7], 7)]  # 7 delivered twice
    duplicates = metric("recsys_events_duplicate_total")

    out = run(msgs, stored)

    s = out.user("ann")
    assert (s.event_count, s.offsets) == (8, {0: 7})
    assert [r.item_id for r in s.recent] == ["i6", "i7"]
    # the replayed items neither moved to the end nor came twice; the new ones follow
    assert list(s.seen_rows) == [4, 0, 2, 1, 5, 3, 6, 7]
    assert metric("recsys_events_duplicate_total") - duplicates == 7
    assert out.trend("i7").offsets == {0: 7}  # counted once


def test_trends_count_each_items_events_with_their_weights():
    half_life = SETTINGS.fold.trending_half_life_seconds
    weights = SETTINGS.fold.event_weights
    events = [
        ev("ann", "i1", T0),
        ev("bob", "i1", T0 + 60, "purchase"),
        ev("cem", "i2", T0 + 30, "click"),
        ev("dee", "i1", T0 + 30),  # late for i1: weighed as of its newest event
    ]
    stored = Stored(trends={"i2": Trend("i2", 2.0, T0, {3: 9})})

    out = run([message(e, k) for k, e in enumerate(events)], stored)

    score, ts = 0.0, -math.inf
    for e in (events[0], events[1], events[3]):
        ts = e["timestamp"] if ts == -math.inf else ts
        score, ts = decayed_add(score, ts, weights[e["event_type"]], e["timestamp"], half_life)
    i1 = out.trend("i1")
    assert (i1.score, i1.ts, i1.offsets) == (pytest.approx(score), T0 + 60, {0: 3})
    i2 = out.trend("i2")  # continues from the stored count
    want, _ = decayed_add(2.0, T0, weights["click"], T0 + 30, half_life)
    assert (i2.score, i2.offsets) == (pytest.approx(want), {3: 9, 0: 2})


def test_with_trending_off_users_fold_and_no_item_is_counted(tmp_path: Path):
    """An operator turns trending off (and on again) on a flow with recovery: users fold
    as before, no item is counted meanwhile, and the counts resume where they were."""
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(tmp_path)
    msgs = [message(ev("ann", "i1", T0 + k), k) for k in range(6)]
    stored = Stored()

    first = run(msgs[:2], stored, recovery=recovery)
    assert first.trend("i1").offsets == {0: 1}
    stored.users = {u: s for u, s in first.users}
    stored.trends = {i: t for i, t in first.trends}

    off = run(
        msgs[:4], stored, recovery=recovery, settings=SETTINGS.with_values(trending_enabled=False)
    )
    assert off.trends == [] and off.dead == []
    assert off.user("ann").event_count == 4
    stored.users = {u: s for u, s in off.users}

    on = run(msgs, stored, recovery=recovery)
    assert on.user("ann").event_count == 6
    assert on.trend("i1").offsets == {0: 5}  # events 2 and 3 came while it was off


def test_offsets_of_another_topic_incarnation_do_not_skip_events():
    stored = Stored(users={"ann": UserState("ann", event_count=5, offsets={0: 4}, log_id="A")})
    out = run([message(ev("ann", "i1", T0), 0)], stored, log_id="B")
    s = out.user("ann")
    assert (s.event_count, s.offsets, s.log_id) == (6, {0: 0}, "B")


def test_a_new_topic_incarnation_is_logged_once_per_flow(caplog: pytest.LogCaptureFixture):
    def stored() -> Stored:
        old = {u: UserState(u, offsets={0: 9}, log_id="A") for u in ("ann", "bob")}
        return Stored(old, {"i1": Trend("i1", 1.0, T0, {0: 9}, "A")})

    msgs = [message(ev(u, "i1", T0 + k), k) for k, u in enumerate(("ann", "bob"))]
    resets = metric("recsys_offsets_reset_total", step="user")
    with caplog.at_level("WARNING", logger="dataflow.incarnation"):
        run(msgs, stored(), log_id="B")
        run(msgs, stored(), log_id="C")  # another flow
    assert metric("recsys_offsets_reset_total", step="user") - resets == 4  # every key
    warnings = [r.getMessage() for r in caplog.records if "new id" in r.getMessage()]
    assert len(warnings) == 2 and "new id B" in warnings[0] and "new id C" in warnings[1]


def test_a_resumed_flow_continues_from_the_store(tmp_path: Path):
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(tmp_path)
    msgs = [message(ev("ann", f"i{k}", T0 + k), k) for k in range(3)]
    stored = Stored()
    first = run(msgs[:2], stored, recovery=recovery)
    assert first.user("ann").event_count == 2
    # What the sink wrote is in the store; the recovery snapshot holds no user.
    stored.users = {u: UserState.from_snapshot(s.to_snapshot()) for u, s in first.users}
    # The testing source resumes after the two messages it gave; the user's state comes
    # from the store, so nothing is lost or counted twice.
    resumed = run(msgs, stored, recovery=recovery)
    s = resumed.user("ann")
    assert (s.event_count, s.offsets) == (3, {0: 2})
    assert [r.item_id for r in s.recent] == ["i0", "i1", "i2"]
    assert list(s.seen_rows) == [
        0,
        1,
        2,
    ]  # none lost, none twice  # from the snapshot: none lost, none twice
