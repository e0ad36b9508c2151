"""Messages the dataflow cannot fold, and the sink that writes them to the dead-letter
topic with the reason.

Delivery: Bytewax's ``KafkaSink`` (confluent-kafka producer), at-least-once: after a
crash the epoch being written is produced again, so a dead letter may appear twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from confluent_kafka import Message

from core.events import ErasureMarker, ValidEvent, encode, encode_erasure
from core.settings import Settings
from dataflow import metrics
from eventlog.producer import PRODUCER_CONFIG, dlq_headers

log = logging.getLogger(__name__)

DeadLetter = KafkaSinkMessage[bytes | None, bytes | None]
"""What the dead-letter sink receives: the original key, bytes and headers, the reason in
``dlq.*`` headers."""


@dataclass(slots=True)
class Rejected:
    """A message the dataflow cannot fold, on its way to the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    reason: str
    kind: str
    """Short machine-readable class of the reason, used as a metric label."""
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    headers: list[tuple[str, bytes | None]] | None = None
    """The producer's own headers, kept on the dead letter beside the ``dlq.*`` ones."""

    @classmethod
    def of_message(cls, msg: Message, reason: str, kind: str) -> Rejected:
        """``msg`` as it came from Kafka: its key, bytes and headers, unchanged."""
        return cls(
            msg.key(),
            msg.value(),
            reason,
            kind,
            msg.topic(),
            msg.partition(),
            msg.offset(),
            # A consumed message's headers are a list of (name, bytes or None), or None;
            # the stubs also allow the dict and str forms a producer accepts.
            cast(list[tuple[str, bytes | None]] | None, msg.headers()),
        )

    @classmethod
    def of_event(
        cls,
        event: ValidEvent | ErasureMarker,
        topic: str,
        partition: int,
        offset: int,
        reason: str,
        kind: str,
    ) -> Rejected:
        """An event that was parsed but could not be applied: the original bytes are gone
        by then, so the dead letter holds its canonical JSON (``core.events.encode``),
        which can be produced again as it is."""
        raw = encode(event) if isinstance(event, ValidEvent) else encode_erasure(event)
        return cls(event.user_id.encode(), raw, reason, kind, topic, partition, offset)

    def to_sink(self) -> DeadLetter:
        source = f"{self.topic}:{self.partition}:{self.offset}"
        headers = dlq_headers(self.reason, self.kind, source, self.headers)
        # Bytewax types header values as bytes; the producer takes None as well.
        return KafkaSinkMessage(key=self.key, value=self.value, headers=headers)  # type: ignore[arg-type]


def dead_letter(r: Rejected) -> DeadLetter:
    """Count and log a rejected message; return what the dead-letter sink writes."""
    metrics.EVENTS_DEAD_LETTERED.labels(r.kind).inc()
    log.warning("dead-lettered %s:%s:%s: %s", r.topic, r.partition, r.offset, r.reason)
    return r.to_sink()


def dead_letter_sink(settings: Settings) -> KafkaSink:
    """The dead-letter topic (delivery: at-least-once, as the module says)."""
    return KafkaSink(
        settings.kafka.bootstrap_servers.split(","),
        settings.kafka.dead_letter_topic,
        add_config=PRODUCER_CONFIG,
    )
