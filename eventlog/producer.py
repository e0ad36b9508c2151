"""Producing to Kafka: accepted events keyed by user, and the dead-letter headers every
writer of a dead letter uses.

Keying by user keeps each user's events in order on one partition; kafka-python's
murmur2 partitioner matches the Java client's, and ``PRODUCER_CONFIG`` makes
librdkafka (confluent-kafka) producers use it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError

from core.events import ValidEvent, encode
from core.records import iso
from core.settings import Settings

# kafka-python and the Java client hash keys with murmur2; librdkafka's default differs.
# Using murmur2 everywhere keeps one user on one partition whichever client produced.
PRODUCER_CONFIG = {"partitioner": "murmur2_random"}

SEND_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0


class ProducerUnavailable(RuntimeError):
    """Kafka could not take the events; the API answers 503 and the client may retry."""


class EventProducer:
    def __init__(self, settings: Settings) -> None:
        self._servers = settings.kafka.bootstrap_servers.split(",")
        self._topic = settings.kafka.events_topic
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _get(self) -> KafkaProducer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    try:
                        self._producer = KafkaProducer(
                            bootstrap_servers=self._servers,
                            acks="all",
                            linger_ms=1,
                            retries=5,
                            request_timeout_ms=int(SEND_TIMEOUT_SECONDS * 1000),
                            # Fail a request in seconds, not minutes, when Kafka is away.
                            bootstrap_timeout_ms=int(CONNECT_TIMEOUT_SECONDS * 1000),
                            max_block_ms=int(CONNECT_TIMEOUT_SECONDS * 1000),
                        )
                    except KafkaError as e:
                        raise ProducerUnavailable(
                            f"cannot reach Kafka at {self._servers}: {e}"
                        ) from e
        return self._producer

    def send(self, events: Sequence[ValidEvent]) -> None:
        """Blocks until the broker acknowledged every event, so 202 means durable."""
        producer = self._get()
        try:
            futures = [
                producer.send(self._topic, key=e.user_id.encode(), value=encode(e)) for e in events
            ]
            producer.flush(SEND_TIMEOUT_SECONDS)
            for f in futures:
                f.get(timeout=SEND_TIMEOUT_SECONDS)
        except KafkaError as e:
            raise ProducerUnavailable(f"Kafka did not acknowledge the events: {e}") from e

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


def dlq_headers(reason: str, kind: str, source: str) -> list[tuple[str, bytes]]:
    """The headers of every dead letter, whoever writes it (the dataflow, `recsys replay`)."""
    return [
        ("dlq.reason", reason.encode()),
        ("dlq.kind", kind.encode()),
        ("dlq.source", source.encode()),
        ("dlq.time", (iso(time.time()) or "").encode()),
    ]
