"""Messages the dataflow cannot fold, and the sink that writes them to the dead-letter
topic with the reason.

Delivery: Bytewax's ``KafkaSink`` (confluent-kafka producer), at-least-once: after a
crash the epoch being written is produced again, so a dead letter may appear twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage

from core.settings import Settings
from eventlog.producer import PRODUCER_CONFIG, dlq_headers


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

    def to_sink(self) -> KafkaSinkMessage[bytes | None, bytes | None]:
        source = f"{self.topic}:{self.partition}:{self.offset}"
        headers = dlq_headers(self.reason, self.kind, source)
        return KafkaSinkMessage(key=self.key, value=self.value, headers=headers)


def dead_letter_sink(settings: Settings) -> KafkaSink:
    return KafkaSink(
        settings.kafka.bootstrap_servers.split(","),
        settings.kafka.dead_letter_topic,
        add_config=PRODUCER_CONFIG,
    )
