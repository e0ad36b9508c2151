"""The dataflow's steps as plain callables: parse, fold per user, count per item.

Each is a thin shell around the pure maths in ``dataflow.fold`` and
``dataflow.events``: it adds the Kafka position, the catalogue lookup and metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage

from dataflow import metrics
from dataflow.events import InvalidEvent, ValidEvent, decode, validate
from dataflow.fold import FoldParams, decayed_add, fold_event, rebuild_vector
from dataflow.kafka_io import Rejected
from featurestore.catalog import CatalogProvider
from featurestore.schemas import UserState
from featurestore.settings import Settings
from featurestore.store import FeatureStore, Trend

# How often the fold checks whether a new model version became active.
MODEL_CHECK_SECONDS = 2.0


@dataclass(slots=True)
class Accepted:
    event: ValidEvent
    partition: int
    offset: int
    kafka_ts: float


class Parser:
    """Kafka message -> Accepted, or Rejected with the reason a human can act on."""

    def __init__(self, settings: Settings) -> None:
        self._types = frozenset(settings.event_weights)
        self._max_future = settings.max_future_seconds
        self._max_bytes = settings.max_event_bytes

    def __call__(
        self, msg: KafkaSourceMessage[Any, Any] | KafkaError[Any, Any]
    ) -> Accepted | Rejected:
        metrics.EVENTS_IN.inc()
        if isinstance(msg, KafkaError):
            m = msg.msg
            return Rejected(
                m.key,
                m.value,
                f"kafka error: {msg.err}",
                "kafka_error",
                m.topic,
                m.partition,
                m.offset,
            )
        raw = msg.value
        kafka_ts = (
            msg.timestamp[1] / 1000.0 if msg.timestamp and msg.timestamp[1] > 0 else time.time()
        )
        try:
            if not raw:
                raise InvalidEvent("empty message", "empty")
            if len(raw) > self._max_bytes:
                raise InvalidEvent(
                    f"message is {len(raw)} bytes; the limit is {self._max_bytes}", "oversized"
                )
            event = validate(decode(raw), self._types, time.time(), self._max_future, kafka_ts)
        except InvalidEvent as e:
            return Rejected(msg.key, raw, str(e), e.kind, msg.topic, msg.partition, msg.offset)
        assert msg.partition is not None and msg.offset is not None
        return Accepted(event, msg.partition, msg.offset, kafka_ts)


class UserFolder:
    """stateful_flat_map logic keyed by user: load, dedupe, fold, emit the new state."""

    def __init__(self, settings: Settings, store: FeatureStore, catalogs: CatalogProvider) -> None:
        self._store = store
        self._catalogs = catalogs
        self._params = FoldParams.from_settings(settings)

    def __call__(self, state: UserState | None, acc: Accepted) -> tuple[UserState, list[UserState]]:
        ev = acc.event
        if state is None:
            # First sight in this run: continue from the stored features, so restarts and
            # replays neither reset a user nor count their events twice.
            state = self._store.read_user_state(ev.user_id) or UserState(ev.user_id)
        if state.seen(acc.partition, acc.offset):
            metrics.EVENTS_DUPLICATE.inc()
            return state, []
        catalog = self._catalogs.maybe_refresh(MODEL_CHECK_SECONDS)
        vector = None
        categories: list[str] = []
        if catalog is not None:
            if state.model_version != catalog.version:
                rebuild_vector(state, catalog.vector, self._params, catalog.version)
            vector = catalog.vector(ev.item_id)
            categories = catalog.categories(ev.item_id)
        if vector is None:
            metrics.UNKNOWN_ITEMS.inc()
        fold_event(state, ev, vector, categories, self._params)
        state.offsets[acc.partition] = acc.offset
        metrics.EVENTS_FOLDED.inc()
        metrics.FOLD_LAG.observe(max(0.0, time.time() - acc.kafka_ts))
        return state, [state]


class TrendFolder:
    """stateful_flat_map logic keyed by item: a decayed count of recent events (trending)."""

    def __init__(self, settings: Settings, store: FeatureStore) -> None:
        self._store = store
        self._half_life = settings.trending_half_life_seconds
        self._weights = dict(settings.event_weights)

    def __call__(self, t: Trend | None, acc: Accepted) -> tuple[Trend, list[Trend]]:
        ev = acc.event
        if t is None:
            t = self._store.read_trends([ev.item_id]).get(ev.item_id) or Trend(
                ev.item_id, 0.0, ev.ts
            )
        if acc.offset <= t.offsets.get(acc.partition, -1):
            return t, []
        w = self._weights[ev.event_type]
        t.score, t.ts = decayed_add(t.score, t.ts, w, ev.ts, self._half_life)
        t.offsets[acc.partition] = acc.offset
        return t, [t]
