"""The dataflow's steps as plain callables: parse, fold per user, count per item.

Each is a thin shell around the pure maths in ``core.fold`` and
``core.events``: it adds the Kafka position, the catalogue lookup and metrics.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import numpy as np
from bytewax.operators import StatefulBatchLogic
from confluent_kafka import Message

from core.catalog import CatalogProvider
from core.events import InvalidEvent, ValidEvent, decode, validate
from core.fold import FoldParams, decayed_add, fold_event, rebuild_vector
from core.settings import Settings
from core.state import RecentItem, Trend, UserState
from dataflow import metrics
from dataflow.deadletter import Rejected
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

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
        self._types = frozenset(settings.fold.event_weights)
        self._max_future = settings.fold.max_future_seconds
        self._max_bytes = settings.fold.max_event_bytes

    def parse_batch(self, msgs: list[Message]) -> list[Accepted | Rejected]:
        """One call per batch the source hands over (up to its batch size)."""
        metrics.SOURCE_BATCH_MESSAGES.observe(len(msgs))
        metrics.EVENTS_IN.inc(len(msgs))
        one = self._parse
        return [one(m) for m in msgs]

    def __call__(self, msg: Message) -> Accepted | Rejected:
        metrics.EVENTS_IN.inc()
        return self._parse(msg)

    def _parse(self, msg: Message) -> Accepted | Rejected:
        raw = msg.value()
        err = msg.error()
        if err is not None:
            return Rejected(
                msg.key(),
                raw,
                f"kafka error: {err}",
                "kafka_error",
                msg.topic(),
                msg.partition(),
                msg.offset(),
            )
        ts_ms = msg.timestamp()[1]
        kafka_ts = ts_ms / 1000.0 if ts_ms > 0 else time.time()
        try:
            if not raw:
                raise InvalidEvent("empty message", "empty")
            if len(raw) > self._max_bytes:
                raise InvalidEvent(
                    f"message is {len(raw)} bytes; the limit is {self._max_bytes}", "oversized"
                )
            event = validate(decode(raw), self._types, time.time(), self._max_future, kafka_ts)
        except InvalidEvent as e:
            return Rejected(
                msg.key(), raw, str(e), e.kind, msg.topic(), msg.partition(), msg.offset()
            )
        return Accepted(event, msg.partition(), msg.offset(), kafka_ts)


class UserFolder:
    """Per-user fold of a micro-batch: load, dedupe, fold, one new state per batch."""

    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        catalogs: CatalogProvider,
        log_id: str | None = None,
    ) -> None:
        self._store = store
        self._catalogs = catalogs
        self.log_id = log_id
        """Id of the events topic being read (``eventlog.admin.topic_id``); None: not checked."""
        self._params = FoldParams.from_settings(settings)
        self.live = 0
        """Users held in memory by this flow's fold (the TTL bounds it)."""
        self.metrics = metrics.StepMetrics("user")
        self.check_every: float | None = settings.dataflow.model_migrate_seconds
        """How often each held user checks for a new model version."""

    def load(self, first: Accepted) -> UserState:
        # First sight in this run (or after the state expired): continue from the stored
        # features, so restarts and replays neither reset a user nor count events twice.
        user_id = first.event.user_id
        return self._store.read_user_state(user_id) or UserState(user_id)

    @staticmethod
    def encode(s: UserState) -> bytes:
        """The recovery snapshot: ~1.5 us (pickle ~25 us, deepcopy ~120 us)."""
        return _pack(
            (
                s.user_id,
                None if s.vector is None else s.vector.tobytes(),
                s.mass,
                s.last_ts,
                s.categories,
                [(r.item_id, r.ts, r.event_type) for r in s.recent],
                s.session_id,
                s.session_start,
                s.session_events,
                s.event_count,
                s.unknown_items,
                s.model_version,
                s.offsets,
                s.log_id,
            )
        )

    @staticmethod
    def decode(b: bytes) -> UserState:
        u, vec, mass, last, cats, recent, sid, sstart, sev, n, unknown, version, offs, log_id = (
            _unpack_user(b)
        )
        return UserState(
            u,
            None if vec is None else np.frombuffer(vec, dtype=np.float32).copy(),
            mass,
            last,
            cats,
            [RecentItem(i, t, e) for i, t, e in recent],
            sid,
            sstart,
            sev,
            n,
            unknown,
            version,
            offs,
            log_id,
        )

    def migrate(self, state: UserState) -> bool:
        """Move a user to the active model's item space if it changed; True if it did.

        Called on a timer for every user held in memory, so a model switch reaches them
        without waiting for their next event."""
        catalog = self._catalogs.maybe_refresh(MODEL_CHECK_SECONDS)
        if catalog is None or state.model_version == catalog.version:
            return False
        rebuild_vector(state, catalog.vector, self._params, catalog.version)
        metrics.USERS_MIGRATED.inc()
        return True

    def fold(self, state: UserState, batch: list[Accepted]) -> bool:
        """Apply ``batch`` (one user's events, in partition order) to ``state`` in place.

        Returns whether anything was applied (replayed offsets are skipped).
        """
        if state.log_id != self.log_id and adopt_log(state, self.log_id):
            _count_reset(self.metrics, state.user_id, self.log_id)
        catalog = self._catalogs.maybe_refresh(MODEL_CHECK_SECONDS)
        if catalog is not None and state.model_version != catalog.version:
            rebuild_vector(state, catalog.vector, self._params, catalog.version)
        params = self._params
        offsets = state.offsets
        applied = 0
        now = time.time()
        for acc in batch:
            last = offsets.get(acc.partition, -1)
            if acc.offset <= last:
                metrics.EVENTS_DUPLICATE.inc()
                continue
            ev = acc.event
            if catalog is None:
                vector, categories = None, ()
            else:
                i = catalog.index.get(ev.item_id)
                if i is None:
                    vector, categories = None, ()
                else:
                    vector, categories = catalog.vectors[i], catalog.items[i].categories
            if vector is None:
                metrics.UNKNOWN_ITEMS.inc()
            if ev.ts < state.last_ts:
                metrics.EVENTS_LATE.inc()
            fold_event(state, ev, vector, categories, params)
            offsets[acc.partition] = acc.offset
            applied += 1
        if applied:
            metrics.EVENTS_FOLDED.inc(applied)
            # per user batch, its oldest event (a histogram per event cost ~3 % of the flow)
            metrics.FOLD_LAG.observe(max(0.0, now - batch[0].kafka_ts))
        return applied > 0


class TrendFolder:
    """Per-item decayed count of recent events (trending), one micro-batch at a time."""

    def __init__(self, settings: Settings, store: FeatureStore, log_id: str | None = None) -> None:
        self._store = store
        self.log_id = log_id
        self._half_life = settings.fold.trending_half_life_seconds
        self._weights = dict(settings.fold.event_weights)
        self.live = 0
        self.metrics = metrics.StepMetrics("item")
        self.check_every: float | None = None

    def load(self, first: Accepted) -> Trend:
        item_id = first.event.item_id
        return self._store.read_trends([item_id]).get(item_id) or Trend(item_id, 0.0, -math.inf)

    @staticmethod
    def encode(t: Trend) -> bytes:
        return _pack((t.item_id, t.score, t.ts, t.offsets, t.log_id))

    @staticmethod
    def decode(b: bytes) -> Trend:
        return Trend(*_unpack_trend(b))

    def migrate(self, t: Trend) -> bool:
        return False  # counts do not live in an item space

    def fold(self, t: Trend, batch: list[Accepted]) -> bool:
        if t.log_id != self.log_id and adopt_log(t, self.log_id):
            _count_reset(self.metrics, t.item_id, self.log_id)
        applied = False
        for acc in batch:
            if acc.offset <= t.offsets.get(acc.partition, -1):
                continue
            ev = acc.event
            if t.ts == -math.inf:
                t.ts = ev.ts
            w = self._weights[ev.event_type]
            t.score, t.ts = decayed_add(t.score, t.ts, w, ev.ts, self._half_life)
            t.offsets[acc.partition] = acc.offset
            applied = True
        return applied


S = TypeVar("S", UserState, Trend)

_pack = msgspec.msgpack.Encoder().encode
_UserTuple = tuple[
    str,
    bytes | None,
    float,
    float,
    dict[str, float],
    list[tuple[str, float, str]],
    str | None,
    float,
    int,
    int,
    int,
    str | None,
    dict[int, int],
    str | None,
]
_TrendTuple = tuple[str, float, float, dict[int, int], str | None]


_unpack_user = msgspec.msgpack.Decoder(_UserTuple).decode
_unpack_trend = msgspec.msgpack.Decoder(_TrendTuple).decode


def adopt_log(state: UserState | Trend, log_id: str | None) -> bool:
    """Tie ``state``'s offsets to the events topic incarnation ``log_id``.

    Offsets count from 0 again in a recreated topic, so offsets remembered under another
    id would skip its events as replays: they are dropped. With no id (a broker without
    topic ids) offsets are trusted as they are, and so are those of a state written
    before ids were kept (its id is None): dropping them would count a re-read of the
    same topic twice. True if offsets were dropped.
    """
    if log_id is None or state.log_id == log_id:
        return False
    dropped = state.log_id is not None and bool(state.offsets)
    if dropped:
        state.offsets = {}
    state.log_id = log_id
    return dropped


_reset_logged: set[str] = set()


def _count_reset(m: metrics.StepMetrics, key: str, log_id: str | None) -> None:
    m.offsets_reset.inc()
    if log_id not in _reset_logged:  # once per topic incarnation, not once per key
        _reset_logged.add(str(log_id))
        log.warning(
            "events topic has a new id %s: offsets remembered from an earlier incarnation "
            "are dropped (first key: %s); recsys_offsets_reset_total counts the keys",
            log_id,
            key,
        )


class ExpiringState(StatefulBatchLogic[Accepted, S, bytes]):
    """Bytewax logic for one key: fold each micro-batch, emit the new state, forget the
    key after ``ttl`` seconds without events.

    Emitting once per batch coalesces a user's burst into one store write; with
    ``emit_every`` > 0 (trends) a key is emitted at most that often, the last change
    then by a timer, so a hot item is not rewritten on every batch. The snapshot Bytewax
    takes at each epoch close (for recovery) is the state packed by ``folder.encode``:
    immutable, and ~80x cheaper than the deep copy ``stateful_flat_map`` makes. Each held
    key also wakes every ``folder.check_every`` seconds (users: to follow a model
    switch). A forgotten key's features
    stay in the store; its next event reads them back (``folder.load``).
    """

    def __init__(
        self,
        folder: UserFolder | TrendFolder,
        ttl: float,
        emit_every: float,
        resume: bytes | None,
    ) -> None:
        self._folder = folder
        self._ttl = ttl
        self._emit_every = emit_every
        self._state: Any = None if resume is None else folder.decode(resume)
        self._expires = time.time() + ttl
        self._next_emit = 0.0
        self._pending = False
        every = folder.check_every
        self._check_at = math.inf if every is None else time.time() + every
        folder.live += 1
        folder.metrics.keys.inc()

    @classmethod
    def builder(cls, folder: UserFolder | TrendFolder, ttl: float, emit_every: float = 0.0) -> Any:
        return lambda resume: cls(folder, ttl, emit_every, resume)

    def on_batch(self, values: list[Accepted]) -> tuple[list[S], bool]:
        state = self._state
        if state is None:
            state = self._state = self._folder.load(values[0])
        now = time.time()
        self._expires = now + self._ttl
        m = self._folder.metrics
        m.batches += 1
        if m.batches % m.SAMPLE:
            changed = self._folder.fold(state, values)
        else:  # timings and sizes of one batch in SAMPLE: the histograms cost ~5 % each
            t0 = time.perf_counter()
            changed = self._folder.fold(state, values)
            m.fold_seconds.observe(time.perf_counter() - t0)
            m.batch_events.observe(len(values))
        if not changed:
            return [], StatefulBatchLogic.RETAIN
        if now < self._next_emit:
            self._pending = True
            return [], StatefulBatchLogic.RETAIN
        self._next_emit = now + self._emit_every
        return [state], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[S], bool]:
        now = time.time()
        every = self._folder.check_every
        if every is not None and now >= self._check_at:
            self._check_at = now + every
            if self._state is not None and self._folder.migrate(self._state):
                self._pending = True
                self._next_emit = 0.0
        if self._pending and now >= self._next_emit:
            self._pending = False
            self._next_emit = now + self._emit_every
            return [self._state], StatefulBatchLogic.RETAIN
        if self._pending or now < self._expires:
            return [], StatefulBatchLogic.RETAIN
        self._forget()
        return [], StatefulBatchLogic.DISCARD

    def notify_at(self) -> datetime:
        at = min(self._expires, self._check_at)
        if self._pending:
            at = min(at, self._next_emit)
        return datetime.fromtimestamp(at, tz=UTC)

    def snapshot(self) -> bytes:
        return self._folder.encode(self._state)

    def _forget(self) -> None:
        self._folder.live -= 1
        self._folder.metrics.keys.dec()
        self._folder.metrics.expired.inc()
