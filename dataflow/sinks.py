"""Batched writes of folded state to the feature store, retried until they succeed.

Bytewax hands each sink partition whatever arrived since the last activation; a user
who produced several events in that window is written once, with their latest state.

Delivery: at-least-once, idempotent. A write is an upsert of the whole state by its key;
a failed write is tried again with back-off (``StoreWrites``) and holds the flow
meanwhile, so nothing is skipped; after a crash the resumed flow writes the same states
again (the fold skips offsets a state already applied), so the store converges to
exactly-once state. A user's erasure is applied in order with the user's states: a state
emitted before it is never written after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.state import Trend, UserState
from dataflow import metrics
from dataflow.users import UserErased
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0


class WriteAbandoned(RuntimeError):
    """The flow was asked to stop while a store write kept failing. Its epoch is not
    committed, so a flow with recovery folds and writes those events again at its next
    start; without recovery, the stored states' offsets let it re-read them."""


class StoreWrites:
    """Store writes tried until they succeed, with exponential back-off between attempts
    (``RETRY_FIRST_SECONDS`` doubling up to ``RETRY_MAX_SECONDS``).

    A write that fails (the store away, a full disk, a server error) holds the worker:
    no later batch is read, events wait in Kafka (the consumer lag grows) and nothing is
    lost or reordered. ``error`` says what fails while it does (``/readyz``'s store
    check). Setting ``stop`` ends the retries with ``WriteAbandoned``.
    """

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop or threading.Event()
        self._failing: dict[str, str] = {}

    @property
    def error(self) -> str | None:
        """The last failure of each write still being retried; None: writes succeed."""
        return "; ".join(self._failing.values()) or None

    def write(
        self, collection: str, write: Callable[[Sequence[T]], object], batch: Sequence[T]
    ) -> None:
        delay = RETRY_FIRST_SECONDS
        failures = 0
        while True:
            try:
                write(batch)
            except Exception as e:
                failures += 1
                metrics.STORE_WRITE_RETRIES.labels(collection).inc()
                error = f"writing {len(batch)} point(s) to {collection} failed: {e}"
                self._failing[collection] = error
                if failures == 1 or failures % 20 == 0:
                    log.warning("%s (%d in a row); retrying", error, failures)
                if self._stop.wait(delay):
                    raise WriteAbandoned(f"stopped while retrying: {error}") from e
                delay = min(RETRY_MAX_SECONDS, delay * 2)
                continue
            if failures:
                log.info("%s write succeeded after %d failure(s)", collection, failures)
                self._failing.pop(collection, None)
            return


class _UserStatePartition(StatelessSinkPartition[tuple[str, UserState | UserErased]]):
    def __init__(self, store: FeatureStore, writes: StoreWrites) -> None:
        self._store = store
        self._writes = writes

    def write_batch(self, items: list[tuple[str, UserState | UserErased]]) -> None:
        latest: dict[str, UserState] = {}
        for user, state in items:
            if isinstance(state, UserErased):
                self._erase(latest, state)
            else:
                latest[user] = state
        if not latest:
            return
        t0 = time.perf_counter()
        self._writes.write("user_state", self._store.write_user_states, list(latest.values()))
        metrics.STORE_WRITE_SECONDS.labels("user_state").observe(time.perf_counter() - t0)
        metrics.STORE_BATCH_SIZE.labels("user_state").observe(len(latest))

    def _erase(self, latest: dict[str, UserState], erased: UserErased) -> None:
        """In order with the states: the ones before the erasure are never written."""
        latest.pop(erased.user_id, None)
        self._writes.write(
            "erasures", lambda e: self._store.erase_user(e[0].user_id, e[0].record), [erased]
        )


class UserStateSink(DynamicSink[tuple[str, UserState | UserErased]]):
    """Users' states to the store's user collection, and users' erasures (the erasure
    recorded, the user's points deleted): at-least-once, idempotent upserts and deletes,
    each retried until it succeeds (``StoreWrites``)."""

    def __init__(self, store: FeatureStore, writes: StoreWrites | None = None) -> None:
        self._store = store
        self._writes = writes or StoreWrites()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        return _UserStatePartition(self._store, self._writes)


class _TrendPartition(StatelessSinkPartition[tuple[str, Trend]]):
    def __init__(self, store: FeatureStore, writes: StoreWrites) -> None:
        self._store = store
        self._writes = writes

    def write_batch(self, items: list[tuple[str, Trend]]) -> None:
        latest = {item: trend for item, trend in items}
        self._writes.write("item_trends", self._store.write_trends, list(latest.values()))
        metrics.STORE_BATCH_SIZE.labels("item_trends").observe(len(latest))


class TrendSink(DynamicSink[tuple[str, Trend]]):
    """Items' trending counts to the store: at-least-once, idempotent upserts, each
    retried until it succeeds (``StoreWrites``)."""

    def __init__(self, store: FeatureStore, writes: StoreWrites | None = None) -> None:
        self._store = store
        self._writes = writes or StoreWrites()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        return _TrendPartition(self._store, self._writes)
