"""Kafka messages to validated events, or to dead letters with a reason a human can act
on. Validation rules live in ``core.events``; this adds the Kafka position and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Message

from core.events import ErasureMarker, InvalidEvent, ValidEvent, decode, decode_erasure, validate
from core.settings import Settings
from dataflow import metrics
from dataflow.deadletter import Rejected


@dataclass(slots=True)
class Accepted:
    """A valid event and where it sits in the events topic (offsets make folds idempotent)."""

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
            if (marker := decode_erasure(raw)) is not None:  # not an event: a marker?
                return erasure(msg, marker, kafka_ts)
            return Rejected(
                msg.key(), raw, str(e), e.kind, msg.topic(), msg.partition(), msg.offset()
            )
        return Accepted(event, msg.partition(), msg.offset(), kafka_ts)


@dataclass(slots=True)
class Erasure:
    """A user's erasure marker (``core.events.ErasureMarker``) and where it sits in the
    events topic. It travels with the user's events, in order, to the user's fold."""

    event: ErasureMarker
    """Named as ``Accepted.event`` is: the fold's key is ``.event.user_id`` for both."""
    partition: int
    offset: int
    kafka_ts: float


def erasure(msg: Message, marker: ErasureMarker, kafka_ts: float) -> Erasure | Rejected:
    """The marker, if keyed by its user (so it sits on the user's partition)."""
    if msg.key() != marker.user_id.encode():
        reason = f"erasure marker of user {marker.user_id!r} keyed by {msg.key()!r}, not its user"
        raw = msg.value()
        return Rejected(
            msg.key(), raw, reason, "invalid_erasure", msg.topic(), msg.partition(), msg.offset()
        )
    return Erasure(marker, msg.partition(), msg.offset(), kafka_ts)
