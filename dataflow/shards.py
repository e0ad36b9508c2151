"""The Bytewax logic of one shard of a stateful step: the keys (users, items) hashed to it,
held in memory while they are active, with the feature store as their state of record.

Why shards rather than one Bytewax key per user: Bytewax keeps a logic object per key and,
at each epoch close, writes one recovery row per key the step touched and scans the keys
it holds, so the cost of an epoch grew with the user base (757 ms per close with 1M users
held). Keys are hashed onto a fixed number of shards instead (``dataflow.state_shards``),
and Bytewax sees only those.

State of record: each shard emits a key's new state at once (``emit_every`` = 0, users)
or at most every ``emit_every`` seconds (trends), and the sinks write it to the store in
the same epoch. So once an epoch completes, the store holds what it changed, and a
shard's recovery snapshot holds only what the store does not have yet: states changed
but not written (trends waiting for their next write). A key seen for the first time in
a run, or again after it expired, is read back from the store, in one read per batch for
all such keys. Every stored state carries the per-partition offsets it applied, so the
events a resumed flow reads again are skipped where they were applied already: the state
is exactly-once.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from bytewax.operators import StatefulBatchLogic

from core.events import ErasureMarker, ValidEvent
from core.state import Trend, UserState
from dataflow.deadletter import Rejected
from dataflow.metrics import StepMetrics

log = logging.getLogger(__name__)

S = TypeVar("S", UserState, Trend)


class Positioned(Protocol):
    """What a stateful step folds: an event (``Accepted``) or a user's erasure marker
    (``Erasure``), and where it sits in the events topic."""

    @property
    def event(self) -> ValidEvent | ErasureMarker: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


V = TypeVar("V", bound=Positioned)


@dataclass(frozen=True, slots=True)
class KeyErased:
    """What ``Folder.fold`` returns (instead of True) when the key's state must be
    forgotten, at a user's erasure marker: ``emit`` goes downstream (to the sink, after
    the states emitted before it), the key continues from ``fresh``, and ``rest``, the
    values after the marker, fold into that."""

    emit: Any
    fresh: Any
    rest: list[Any]


class Folder(Protocol[S, V]):
    """What a stateful step does with its keys' states."""

    metrics: StepMetrics
    check_every: float | None
    """Seconds between checks for a new model version (``active_version``); None: never."""

    def key(self, value: V) -> str:
        """The key ``value`` folds into (its user, its item)."""

    def load(self, firsts: list[V]) -> list[S]:
        """The states of keys the shard does not hold, one per value (each its key's
        first), read back from the store."""

    def resume(self, snapshot: bytes) -> S:
        """The state ``S.to_snapshot`` bytes hold."""

    def fold(self, state: S, batch: list[V]) -> bool | KeyErased:
        """Apply ``batch`` (one key's values, in partition order) to ``state`` in place;
        True if anything changed, ``KeyErased`` if the state is void."""

    def active_version(self) -> str | None:
        """The model version held states should be in; None: states have none."""

    def migrate(self, state: S) -> bool:
        """Bring a held state to the active version without an event; True if it changed."""


def shard_keys(shards: int) -> Callable[[str], str]:
    """Key -> the Bytewax key of its shard. A stable hash (CRC-32, not ``hash``): every
    process of a cluster must send a key to the same shard."""
    names = [f"shard-{i:03d}" for i in range(shards)]
    crc = zlib.crc32

    def shard(key: str) -> str:
        return names[crc(key.encode()) % shards]

    return shard


class ShardState(
    StatefulBatchLogic[dict[str, list[V]], tuple[str, S | Rejected], bytes], Generic[S, V]
):
    """Bytewax logic for one shard: fold each key's part of a micro-batch, emit
    ``(key, new state)``, forget a key after ``ttl`` seconds without events; replace its
    state when the folder returns ``KeyErased``.

    An exception while folding never leaves the step: the key's batch is folded again one
    event at a time (the folders skip offsets already applied), and each event that still
    fails is emitted as a ``Rejected`` of kind ``internal_error`` for the dead-letter
    topic (the flow branches it off), so the key, its partition and the flow carry on.
    A user's fold is all or nothing (``core.fold.fold_events``); what a failing trend fold
    changed before it raised stays in the state.

    Emitting once per batch coalesces a key's burst into one store write; with
    ``emit_every`` > 0 (trends) a key is emitted at most that often, the last change then
    by a timer, so a hot item is not rewritten on every batch. Every
    ``folder.check_every`` seconds the shard asks for the active model version, and moves
    the keys it holds when it changed (a model switch reaches them without an event).
    """

    def __init__(
        self,
        folder: Folder[S, V],
        ttl: float,
        emit_every: float,
        topic: str,
        resume: bytes | None,
    ) -> None:
        self._folder: Folder[S, V] = folder
        self._topic = topic
        self._ttl = ttl
        self._emit_every = emit_every
        self._held: OrderedDict[str, S] = OrderedDict()
        """Keys by their last batch, oldest first (so expiry pops from the front)."""
        self._seen: dict[str, float] = {}
        self._pending: dict[str, None] = {}
        """Keys changed and not emitted yet (only with ``emit_every``), in order."""
        self._next_emit: dict[str, float] = {}
        self._flush_at = math.inf
        """When the first pending key may be emitted."""
        every = folder.check_every
        self._check_at = math.inf if every is None else time.time() + every
        self._version = folder.active_version() if every is not None else None
        if resume:
            now = time.time()
            for key, snap in msgspec.msgpack.decode(resume, type=dict[str, bytes]).items():
                self._hold(key, folder.resume(snap), now)
                self._pending[key] = None
            self._flush_at = now if self._pending else math.inf

    @classmethod
    def builder(
        cls, folder: Folder[S, V], ttl: float, topic: str, emit_every: float = 0.0
    ) -> Callable[[bytes | None], ShardState[S, V]]:
        """The ``builder`` ``op.stateful_batch`` calls for each new or resumed shard;
        ``topic``: the events topic, named in dead letters."""
        return lambda resume: cls(folder, ttl, emit_every, topic, resume)

    def _hold(self, key: str, state: S, now: float) -> None:
        self._held[key] = state
        self._seen[key] = now
        self._folder.metrics.keys.inc()

    @property
    def held(self) -> dict[str, S]:
        """The keys' states in memory (read-only use: tests, diagnostics)."""
        return dict(self._held)

    def on_batch(
        self, chunks: list[dict[str, list[V]]]
    ) -> tuple[list[tuple[str, S | Rejected]], bool]:
        """``chunks``: the shard's values by key (``Folder.key``), each key's in order, as
        the flow sent them (one per micro-batch of the source)."""
        groups: dict[str, list[V]] = {}
        for chunk in chunks:
            for k, vs in chunk.items():
                g = groups.get(k)
                if g is None:
                    groups[k] = vs
                else:
                    g.extend(vs)
        held = self._held
        now = time.time()
        missing = [k for k in groups if k not in held]
        if missing:
            states = self._folder.load([groups[k][0] for k in missing])
            for key, state in zip(missing, states, strict=True):
                self._hold(key, state, now)
        out: list[tuple[str, S | Rejected]] = []
        seen = self._seen
        for k, g in groups.items():
            held.move_to_end(k)
            seen[k] = now
            self._fold(k, held[k], g, now, out)
        return out, StatefulBatchLogic.RETAIN

    def _fold(
        self, key: str, state: S, values: list[V], now: float, out: list[tuple[str, S | Rejected]]
    ) -> None:
        m = self._folder.metrics
        m.batches += 1
        try:
            if m.batches % m.SAMPLE:
                changed = self._folder.fold(state, values)
            else:  # timings and sizes of one batch in SAMPLE: the histograms cost ~5 % each
                t0 = time.perf_counter()
                changed = self._folder.fold(state, values)
                m.fold_seconds.observe(time.perf_counter() - t0)
                m.batch_events.observe(len(values))
        except Exception:  # one event must not stop the flow
            self._fold_apart(key, state, values, now, out)
            return
        if not changed:
            return
        if changed is not True:
            self._erased(key, changed, out)
            return
        self._emit(key, state, now, out)

    def _emit(self, key: str, state: S, now: float, out: list[tuple[str, S | Rejected]]) -> None:
        """Emit ``state`` now, or mark it for the timer while ``emit_every`` holds it back."""
        if self._emit_every:
            at = self._next_emit.get(key, 0.0)
            if now < at:
                self._pending[key] = None
                self._flush_at = min(self._flush_at, at)
                return
            self._next_emit[key] = now + self._emit_every
        out.append((key, state))

    def _erased(self, key: str, erased: KeyErased, out: list[tuple[str, S | Rejected]]) -> None:
        """The key's state was erased: emit what the folder says, hold the fresh state
        instead, fold what follows.

        The fresh state is held, not read back from the store later: the sink may not
        have applied the erasure yet when the key's next values arrive."""
        while True:
            out.append((key, erased.emit))
            state = erased.fresh
            self._held[key] = state
            changed = bool(erased.rest) and self._folder.fold(state, erased.rest)
            if changed is True:
                out.append((key, state))
            elif changed:
                erased = changed
                continue
            return

    def _fold_apart(
        self, key: str, state: S, values: list[V], now: float, out: list[tuple[str, S | Rejected]]
    ) -> None:
        """The batch again, one event at a time: the events that fail alone are
        dead-lettered, the others folded (those the failed attempt applied are skipped by
        their offsets). Off the hot path: only after a fold raised."""
        for acc in values:
            try:
                changed = self._folder.fold(state, [acc])
                if changed is not True and changed:  # an erasure marker
                    out.append((key, changed.emit))
                    state = changed.fresh
                    self._held[key] = state
            except Exception as e:
                log.exception(
                    "folding %s:%s:%s failed; dead-lettered", self._topic, acc.partition, acc.offset
                )
                reason = f"internal error in {type(self._folder).__name__}: {type(e).__name__}: {e}"
                rejected = Rejected.of_event(
                    acc.event, self._topic, acc.partition, acc.offset, reason, "internal_error"
                )
                out.append((key, rejected))
        # The failed attempt may have applied events before the one that raised: the
        # state is emitted as changed either way (one write too many at worst).
        self._emit(key, state, now, out)

    def on_notify(self) -> tuple[list[tuple[str, S | Rejected]], bool]:
        now = time.time()
        out: list[tuple[str, S | Rejected]] = []
        if now >= self._check_at:
            self._check_at = now + (self._folder.check_every or math.inf)
            self._migrate_all(out)
        if now >= self._flush_at:
            self._flush(now, out)
        self._expire(now)
        if not self._held:
            return out, StatefulBatchLogic.DISCARD
        return out, StatefulBatchLogic.RETAIN

    def _flush(self, now: float, out: list[tuple[str, S | Rejected]]) -> None:
        """Emit the pending keys whose ``emit_every`` has passed; wake for the others."""
        later = math.inf
        for key in list(self._pending):
            at = self._next_emit.get(key, 0.0)
            if now >= at:
                del self._pending[key]
                self._next_emit[key] = now + self._emit_every
                out.append((key, self._held[key]))
            else:
                later = min(later, at)
        self._flush_at = later

    def _migrate_all(self, out: list[tuple[str, S | Rejected]]) -> None:
        """Move every held state to the active model version, once per version switch. An
        exception is logged and the state kept as it was (it is tried again at the next
        switch or moved by its next event), never a crash of the flow."""
        version = self._folder.active_version()
        if version is None or version == self._version:
            return
        self._version = version
        for key, state in self._held.items():
            try:
                if self._folder.migrate(state):
                    out.append((key, state))
            except Exception:
                log.exception(
                    "moving a held state to the new model failed; moved at its next event"
                )

    def _expire(self, now: float) -> None:
        """Forget the keys idle for ``ttl`` (the oldest are first); their state is in the
        store. A key still waiting for its write stays until it is written."""
        held, seen, pending = self._held, self._seen, self._pending
        cutoff = now - self._ttl
        expired = 0
        while held:
            key = next(iter(held))
            if seen[key] > cutoff or key in pending:
                break
            del held[key], seen[key]
            self._next_emit.pop(key, None)
            expired += 1
        if expired:
            m = self._folder.metrics
            m.keys.dec(expired)
            m.expired.inc(expired)

    def notify_at(self) -> datetime:
        at = self._check_at
        if self._held:
            at = min(at, self._seen[next(iter(self._held))] + self._ttl)
        at = min(at, self._flush_at)
        return datetime.fromtimestamp(at if at < math.inf else time.time() + 3600, tz=UTC)

    def snapshot(self) -> bytes:
        """The states the store does not have yet (pending their write), else nothing."""
        if not self._pending:
            return b""
        held = self._held
        return msgspec.msgpack.encode({k: held[k].to_snapshot() for k in self._pending})
