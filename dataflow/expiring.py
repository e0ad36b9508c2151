"""The Bytewax logic of one key of a stateful step: fold its micro-batches with a folder
(``UserFolder``, ``TrendFolder``), emit the new state, forget the key when idle."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

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
    """What a stateful step does with one key's state."""

    metrics: StepMetrics
    check_every: float | None
    """Seconds between ``migrate`` calls on each held key; None: never."""

    def load(self, first: V) -> S:
        """The state of a key the flow does not hold (``first`` is its first event)."""

    def resume(self, snapshot: bytes) -> S:
        """The state a recovery snapshot (``S.to_snapshot``) holds."""

    def fold(self, state: S, batch: list[V]) -> bool | KeyErased:
        """Apply ``batch`` to ``state`` in place; True if anything changed, ``KeyErased``
        if the state is void."""

    def migrate(self, state: S) -> bool:
        """Bring a held state up to date without an event; True if it changed."""


class ExpiringState(StatefulBatchLogic[V, S | Rejected, bytes], Generic[S, V]):
    """Bytewax logic for one key: fold each micro-batch, emit the new state, forget the
    key after ``ttl`` seconds without events; replace its state when the folder returns
    ``KeyErased``.

    An exception while folding never leaves the step: the batch is folded again one
    event at a time (the folders skip offsets already applied), and each event that
    still fails is emitted as a ``Rejected`` of kind ``internal_error`` for the
    dead-letter topic (the flow branches it off), so the key, its partition and the flow
    carry on. What a failing event changed before it raised stays in the state.

    Emitting once per batch coalesces a user's burst into one store write; with
    ``emit_every`` > 0 (trends) a key is emitted at most that often, the last change
    then by a timer, so a hot item is not rewritten on every batch. The snapshot Bytewax
    takes at each epoch close (for recovery) is the state's ``to_snapshot()`` bytes:
    immutable, and ~80x cheaper than the deep copy ``stateful_flat_map`` makes. Each held
    key also wakes every ``folder.check_every`` seconds (users: to follow a model
    switch). A forgotten key's features stay in the store; its next event reads them
    back (``folder.load``).
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
        self._state: S | None = None if resume is None else folder.resume(resume)
        self._expires = time.time() + ttl
        self._next_emit = 0.0
        self._pending = False
        every = folder.check_every
        self._check_at = math.inf if every is None else time.time() + every
        folder.metrics.keys.inc()

    @classmethod
    def builder(
        cls, folder: Folder[S, V], ttl: float, topic: str, emit_every: float = 0.0
    ) -> Callable[[bytes | None], ExpiringState[S, V]]:
        """The ``builder`` ``op.stateful_batch`` calls for each new or resumed key;
        ``topic``: the events topic, named in dead letters."""
        return lambda resume: cls(folder, ttl, emit_every, topic, resume)

    def on_batch(self, values: list[V]) -> tuple[list[S | Rejected], bool]:
        state = self._state
        if state is None:
            state = self._state = self._folder.load(values[0])
        now = time.time()
        self._expires = now + self._ttl
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
            return self._fold_apart(state, values, now)
        if not changed:
            return [], StatefulBatchLogic.RETAIN
        if changed is not True:
            return self._erased(changed)
        if now < self._next_emit:
            self._pending = True
            return [], StatefulBatchLogic.RETAIN
        self._next_emit = now + self._emit_every
        return [state], StatefulBatchLogic.RETAIN

    def _erased(self, erased: KeyErased) -> tuple[list[S | Rejected], bool]:
        """The key's state was erased: emit what the folder says, hold the fresh state
        instead (the next recovery snapshot replaces the old one), fold what follows.

        The fresh state is held, not read back from the store later: the sink may not
        have applied the erasure yet when the key's next values arrive."""
        out: list[S | Rejected] = []
        while True:
            out.append(erased.emit)
            state = self._state = erased.fresh
            changed = bool(erased.rest) and self._folder.fold(state, erased.rest)
            if changed is True:
                out.append(state)
            elif changed:
                erased = changed
                continue
            return out, StatefulBatchLogic.RETAIN

    def _fold_apart(self, state: S, values: list[V], now: float) -> tuple[list[S | Rejected], bool]:
        """The batch again, one event at a time: the events that fail alone are
        dead-lettered, the others folded (those the failed attempt applied are skipped by
        their offsets). Off the hot path: only after a fold raised."""
        out: list[S | Rejected] = []
        for acc in values:
            try:
                changed = self._folder.fold(state, [acc])
                if changed is not True and changed:  # an erasure marker
                    out.append(changed.emit)
                    state = self._state = changed.fresh
            except Exception as e:
                log.exception(
                    "folding %s:%s:%s failed; dead-lettered", self._topic, acc.partition, acc.offset
                )
                reason = f"internal error in {type(self._folder).__name__}: {type(e).__name__}: {e}"
                out.append(
                    Rejected.of_event(
                        acc.event, self._topic, acc.partition, acc.offset, reason, "internal_error"
                    )
                )
        # The failed attempt may have applied events before the one that raised: the
        # state is emitted as changed either way (one write too many at worst).
        if now < self._next_emit:
            self._pending = True
        else:
            self._next_emit = now + self._emit_every
            out.append(state)
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[S | Rejected], bool]:
        now = time.time()
        every = self._folder.check_every
        if every is not None and now >= self._check_at:
            self._check_at = now + every
            if self._state is not None and self._migrate(self._state):
                self._pending = True
                self._next_emit = 0.0
        if self._pending and self._state is not None and now >= self._next_emit:
            self._pending = False
            self._next_emit = now + self._emit_every
            return [self._state], StatefulBatchLogic.RETAIN
        if self._pending or now < self._expires:
            return [], StatefulBatchLogic.RETAIN
        m = self._folder.metrics
        m.keys.dec()
        m.expired.inc()
        return [], StatefulBatchLogic.DISCARD

    def _migrate(self, state: S) -> bool:
        """``folder.migrate``; an exception is logged and the state kept as it was (it
        tries again at the next check), never a crash of the flow."""
        try:
            return self._folder.migrate(state)
        except Exception:
            log.exception("moving a held state to the new model failed; retried later")
            return False

    def notify_at(self) -> datetime:
        at = min(self._expires, self._check_at)
        if self._pending:
            at = min(at, self._next_emit)
        return datetime.fromtimestamp(at, tz=UTC)

    def snapshot(self) -> bytes:
        # A key's logic is built for its first batch (which loads the state) or from a
        # snapshot: there is a state by the time Bytewax asks for one.
        assert self._state is not None
        return self._state.to_snapshot()
