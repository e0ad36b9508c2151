"""Kafka edges of the dataflow: a source that can be stopped, the dead-letter sink, and
the admin helpers (is a broker there, create the topics) that work against any Kafka."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource, _list_parts
from bytewax.inputs import StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from featurestore.schemas import iso
from featurestore.settings import Settings

log = logging.getLogger(__name__)

# kafka-python and the Java client hash keys with murmur2; librdkafka's default differs.
# Using murmur2 everywhere keeps one user on one partition whichever client produced.
PRODUCER_CONFIG = {"partitioner": "murmur2_random"}


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
        headers = [
            ("dlq.reason", self.reason.encode()),
            ("dlq.kind", self.kind.encode()),
            ("dlq.source", f"{self.topic}:{self.partition}:{self.offset}".encode()),
            ("dlq.time", (iso(time.time()) or "").encode()),
        ]
        return KafkaSinkMessage(key=self.key, value=self.value, headers=headers)


class _StoppablePartition(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], stop: threading.Event) -> None:
        self._inner = inner
        self._stop = stop

    def next_batch(self) -> Any:
        if self._stop.is_set():
            raise StopIteration
        return self._inner.next_batch()

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class StoppableKafkaSource(KafkaSource):
    """KafkaSource whose partitions end when ``stop`` is set, so an in-process flow
    (``run_main`` in a thread beside the API) shuts down cleanly."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        super().__init__(
            brokers=settings.kafka_bootstrap_servers.split(","),
            topics=[settings.events_topic],
            tail=not settings.exit_at_end,
            starting_offset=OFFSET_BEGINNING if settings.start_offset == "earliest" else OFFSET_END,
            add_config=consumer_config(settings),
            raise_on_errors=False,  # errors become items and go to the dead-letter topic
        )
        self._stop = stop or threading.Event()

    def list_parts(self) -> list[str]:
        # Bytewax passes the consumer settings to its AdminClient too, which warns about
        # each of them; the partition listing needs only the brokers.
        admin = AdminClient({"bootstrap.servers": ",".join(self._brokers)})
        return list(_list_parts(admin, self._topics))

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
        return _StoppablePartition(super().build_part(step_id, for_part, resume_state), self._stop)


def consumer_config(settings: Settings) -> dict[str, str]:
    """librdkafka settings for the source: answer fetches fast (freshness), then the
    operator's extras."""
    config = {
        "fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms),
        "fetch.error.backoff.ms": "50",
    }
    return config | {k: str(v) for k, v in settings.kafka_consumer_config.items()}


def dead_letter_sink(settings: Settings) -> KafkaSink:
    return KafkaSink(
        settings.kafka_bootstrap_servers.split(","),
        settings.dead_letter_topic,
        add_config=PRODUCER_CONFIG,
    )


def host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host or "127.0.0.1", int(port)


def port_open(bootstrap: str, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(host_port(bootstrap), timeout=timeout):
            return True
    except OSError:
        return False


def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if a Kafka broker answers a metadata request (not merely an open port)."""
    if not port_open(bootstrap):
        return False
    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


def wait_for_broker(bootstrap: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker_answers(bootstrap):
            return
        time.sleep(0.1)
    raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s")


def ensure_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create missing topics (name -> partitions); existing ones are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [NewTopic(t, n, 1) for t, n in topics.items() if t not in existing]
    for topic, fut in admin.create_topics(missing).items() if missing else ():
        try:
            fut.result(timeout=10)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
        log.info("created topic %s", topic)


def ensure_app_topics(settings: Settings) -> None:
    n = settings.topic_partitions
    ensure_topics(
        settings.kafka_bootstrap_servers, {settings.events_topic: n, settings.dead_letter_topic: n}
    )
