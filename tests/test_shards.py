"""One shard of a stateful step (``dataflow.shards.ShardState``) with the real folders: the
store is the state of record, the recovery snapshot holds only what the store lacks, idle
keys leave memory, a model switch moves every held key once. The flow around it is in
tests/test_flow_logic.py; crashes against the real broker and store in
tests/test_stream_guarantees.py."""

from __future__ import annotations

import time
from collections import Counter

from bytewax.operators import StatefulBatchLogic

from core.catalog import Catalog, CatalogProvider
from core.events import ValidEvent
from core.state import Trend, UserState
from dataflow.parsing import Accepted
from dataflow.shards import ShardState, shard_keys
from dataflow.trends import TrendFolder
from dataflow.users import UserFolder
from tests.helpers import by_item, by_user, make_model
from tests.test_flow_logic import CATALOG, SETTINGS, T0, Stored


def acc(user: str, item: str, offset: int, ts: float = T0) -> Accepted:
    return Accepted(ValidEvent("view", user, item, ts + offset, None), 0, offset, ts)


class CountingStored(Stored):
    """``Stored`` that counts the store reads the folds make."""

    reads: Counter[str]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.reads = Counter()

    def read_user_states(self, user_ids):
        self.reads["users"] += 1
        return super().read_user_states(user_ids)

    def read_erasures(self, user_ids):
        self.reads["erasures"] += 1
        return super().read_erasures(user_ids)


def v1() -> CatalogProvider:
    return CatalogProvider(lambda: "v1", lambda version: CATALOG)


def test_shard_keys_are_stable_and_spread():
    shard = shard_keys(32)
    users = [f"u{k}" for k in range(10_000)]
    assert [shard(u) for u in users] == [shard_keys(32)(u) for u in users]  # any process
    counts = Counter(shard(u) for u in users)
    assert len(counts) == 32 and max(counts.values()) < 2 * 10_000 / 32


def test_a_batch_of_new_users_is_read_from_the_store_in_one_read():
    ann = UserState("ann", model_version="v1", offsets={0: 5}, event_count=3)
    stored = CountingStored(users={"ann": ann})
    logic = ShardState.builder(UserFolder(SETTINGS, stored, v1()), ttl=60.0, topic="e")(None)
    out, retain = logic.on_batch(
        [by_user(acc("ann", "i1", 4), acc("ann", "i2", 6), acc("bob", "i1", 7))]
    )
    assert retain == StatefulBatchLogic.RETAIN
    assert stored.reads == {"users": 1, "erasures": 1}  # bob is new: one look for an erasure
    states = dict(out)
    assert states["ann"].event_count == 4 and states["ann"].offsets == {0: 6}  # 4 was applied
    assert states["bob"].event_count == 1
    logic.on_batch([by_user(acc("ann", "i3", 8), acc("bob", "i3", 9))])
    assert stored.reads == {"users": 1, "erasures": 1}  # held: no read
    assert logic.snapshot() == b""  # every change was emitted: the store has it all


def test_idle_keys_leave_memory_and_come_back_from_the_store():
    stored = CountingStored()
    logic = ShardState.builder(UserFolder(SETTINGS, stored, v1()), ttl=0.05, topic="e")(None)
    (_, ann), *_ = logic.on_batch([by_user(acc("ann", "i1", 1))])[0]
    stored.users["ann"] = UserState.from_snapshot(ann.to_snapshot())  # the sink's write
    time.sleep(0.08)
    out, retain = logic.on_notify()
    assert out == [] and retain == StatefulBatchLogic.DISCARD and logic.held == {}
    # the shard is rebuilt for its next batch; the user continues from the store
    logic = ShardState.builder(UserFolder(SETTINGS, stored, v1()), ttl=0.05, topic="e")(None)
    out, _ = logic.on_batch([by_user(acc("ann", "i1", 1), acc("ann", "i2", 2))])  # 1 is a replay
    ((_, again),) = out
    assert again.event_count == 2 and [r.item_id for r in again.recent] == ["i1", "i2"]


def test_a_state_held_back_by_emit_every_is_in_the_snapshot_until_written():
    """Trends are written at most every ``emit_every``: a change waiting for its write is
    what the store lacks, so the recovery snapshot carries it, and a shard resumed from
    it writes it."""
    items = TrendFolder(SETTINGS, Stored(), v1())
    logic = ShardState.builder(items, ttl=60.0, topic="e", emit_every=0.2)(None)
    first, _ = logic.on_batch([by_item(acc("ann", "i1", 1))])
    assert [k for k, _ in first] == ["i1"] and logic.snapshot() == b""
    held_back, _ = logic.on_batch([by_item(acc("bob", "i1", 2))])
    assert held_back == []
    snapshot = logic.snapshot()
    assert snapshot != b""
    resumed = ShardState.builder(items, ttl=60.0, topic="e", emit_every=0.2)(snapshot)
    ((key, trend),) = resumed.on_notify()[0]
    assert key == "i1" and isinstance(trend, Trend) and trend.offsets == {0: 2}
    assert resumed.snapshot() == b""
    time.sleep(0.25)  # the original shard writes it on its timer too (a replay is harmless)
    assert [k for k, _ in logic.on_notify()[0]] == ["i1"] and logic.snapshot() == b""


def test_a_model_switch_moves_every_held_user_once():
    record2, items2, vecs2, _ = make_model("v2", n=10, dim=8, seed=3)
    version = ["v1"]
    catalogs = CatalogProvider(
        lambda: version[0],
        lambda v: CATALOG if v == "v1" else Catalog("v2", items2, vecs2, record2.head),
    )
    settings = SETTINGS.with_values(model_migrate_seconds=0.01)
    folder = UserFolder(settings, Stored(), catalogs)
    logic = ShardState.builder(folder, ttl=60.0, topic="e")(None)
    logic.on_batch([by_user(*(acc(f"u{k}", f"i{k}", k) for k in range(5)))])
    time.sleep(0.02)
    assert logic.on_notify()[0] == []  # no switch: nothing to move or write
    version[0] = "v2"
    catalogs.refresh()
    time.sleep(0.02)
    moved = logic.on_notify()[0]
    assert sorted(u for u, _ in moved) == [f"u{k}" for k in range(5)]
    assert all(s.model_version == "v2" for _, s in moved)
    time.sleep(0.02)
    assert logic.on_notify()[0] == []  # once per switch
