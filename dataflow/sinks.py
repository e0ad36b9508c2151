"""Batched writes of folded state to the feature store.

Bytewax hands each sink partition whatever arrived since the last activation; a user
who produced several events in that window is written once, with their latest state.

Delivery: at-least-once, idempotent. A write is an upsert of the whole state by its key;
after a crash the resumed flow writes the same states again (the fold skips offsets a
state already applied), so the store converges to exactly-once state. A user's erasure
is applied in order with the user's states: a state emitted before it is never written
after it.
"""

from __future__ import annotations

import time
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.state import Trend, UserState
from dataflow import metrics
from dataflow.users import UserErased
from featurestore.store import FeatureStore


class _UserStatePartition(StatelessSinkPartition[tuple[str, UserState | UserErased]]):
    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def write_batch(self, items: list[tuple[str, UserState | UserErased]]) -> None:
        latest: dict[str, UserState] = {}
        for user, state in items:
            if state.__class__ is UserErased:
                self._erase(latest, state)  # type: ignore[arg-type]
            else:
                latest[user] = state  # type: ignore[assignment]
        if not latest:
            return
        t0 = time.perf_counter()
        self._store.write_user_states(list(latest.values()))
        metrics.STORE_WRITE_SECONDS.labels("user_state").observe(time.perf_counter() - t0)
        metrics.STORE_BATCH_SIZE.labels("user_state").observe(len(latest))

    def _erase(self, latest: dict[str, UserState], erased: UserErased) -> None:
        """In order with the states: the ones before the erasure are never written."""
        latest.pop(erased.user_id, None)
        self._store.erase_user(erased.user_id, erased.record)


class UserStateSink(DynamicSink[tuple[str, UserState | UserErased]]):
    """Users' states to the store's user collection, and users' erasures (the erasure
    recorded, the user's points deleted): at-least-once, idempotent upserts and deletes."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        return _UserStatePartition(self._store)


class _TrendPartition(StatelessSinkPartition[tuple[str, Trend]]):
    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def write_batch(self, items: list[tuple[str, Trend]]) -> None:
        latest = {item: trend for item, trend in items}
        self._store.write_trends(list(latest.values()))
        metrics.STORE_BATCH_SIZE.labels("item_trends").observe(len(latest))


class TrendSink(DynamicSink[tuple[str, Trend]]):
    """Items' trending counts to the store: at-least-once, idempotent upserts."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        return _TrendPartition(self._store)
