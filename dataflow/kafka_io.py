"""Kafka edges of the dataflow: a source that can be stopped, the dead-letter sink, and
the admin helpers (is a broker there, create the topics) that work against any Kafka."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, _list_parts
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from dataflow import metrics
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
        source = f"{self.topic}:{self.partition}:{self.offset}"
        headers = dlq_headers(self.reason, self.kind, source)
        return KafkaSinkMessage(key=self.key, value=self.value, headers=headers)


def dlq_headers(reason: str, kind: str, source: str) -> list[tuple[str, bytes]]:
    """The headers of every dead letter, whoever writes it (the dataflow, `recsys replay`)."""
    return [
        ("dlq.reason", reason.encode()),
        ("dlq.kind", kind.encode()),
        ("dlq.source", source.encode()),
        ("dlq.time", (iso(time.time()) or "").encode()),
    ]


class _Partition(StatefulSourcePartition[Message, int]):
    """One Kafka partition read with a plain confluent consumer.

    Bytewax's own partition wraps each message in a frozen ``KafkaSourceMessage``
    dataclass (~2 us per event, an eighth of the per-event budget); this one hands the
    C ``Message`` objects to the parser as they are. The resume state is the next offset
    to read, as in Bytewax's partition, so recovery snapshots stay compatible. Errors
    (consumer or broker) are returned as messages, and the parser dead-letters them.
    """

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        part: int,
        offset: int,
        batch_size: int,
        stop: threading.Event,
    ) -> None:
        self._offset = offset
        self._topic = topic
        self._part = part
        self._batch_size = batch_size
        self._stop = stop
        self._eof = False
        self._lag = metrics.CONSUMER_LAG.labels(topic, str(part))
        self._consumer = Consumer(config | {"stats_cb": self._stats})
        self._consumer.assign([TopicPartition(topic, part, offset)])

    def _stats(self, stats: str) -> None:
        p = json.loads(stats)["topics"].get(self._topic, {}).get("partitions", {})
        end = p.get(str(self._part), {}).get("ls_offset", -1)
        if end >= 0 and self._offset >= 0:
            self._lag.set(max(0, end - self._offset))

    def next_batch(self) -> list[Message]:
        if self._eof or self._stop.is_set():
            raise StopIteration
        msgs = self._consumer.consume(self._batch_size, 0)
        if msgs:
            if any(_is_eof(m) for m in msgs):
                self._eof = True  # only reported when the source does not tail
                msgs = [m for m in msgs if not _is_eof(m)]
            for m in reversed(msgs):
                off = m.offset()
                if off is not None and off >= 0:
                    self._offset = off + 1
                    break
        return msgs

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


def _is_eof(m: Message) -> bool:
    err = m.error()
    return err is not None and err.code() == ConfluentKafkaError._PARTITION_EOF


class StoppableKafkaSource(FixedPartitionedSource[Message, int]):
    """The events topic as a Bytewax source: partitions are the unit of parallelism,
    each partition's next offset is its recovery state, and the partitions end when
    ``stop`` is set, so an in-process flow (beside the API) shuts down cleanly."""

    def __init__(
        self, settings: Settings, stop: threading.Event | None = None, batch_size: int = 1000
    ) -> None:
        self._brokers = settings.kafka_bootstrap_servers
        self._topic = settings.events_topic
        self._tail = not settings.exit_at_end
        self._start = OFFSET_BEGINNING if settings.start_offset == "earliest" else OFFSET_END
        self._config = consumer_config(settings)
        self._batch_size = batch_size
        self._stop = stop or threading.Event()

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._brokers})
        return list(_list_parts(admin, [self._topic]))

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        part = int(for_part.split("-", 1)[0])
        config = {
            "bootstrap.servers": self._brokers,
            "group.id": "recsys-dataflow",  # offsets live in Bytewax recovery, not Kafka
            "enable.auto.commit": "false",
            "enable.partition.eof": str(not self._tail).lower(),
            "statistics.interval.ms": "1000",
        } | self._config
        start = self._start if resume_state is None else resume_state
        return _Partition(config, self._topic, part, start, self._batch_size, self._stop)


def consumer_config(settings: Settings) -> dict[str, str]:
    """librdkafka settings for the source: answer fetches fast (freshness), then the
    operator's extras."""
    config = {
        "fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms),
        "fetch.error.backoff.ms": "50",
        # A recovered position beyond the end of the partition (the topic was recreated)
        # restarts where the start policy says, never silently at the end.
        "auto.offset.reset": "earliest" if settings.start_offset == "earliest" else "latest",
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


# The id a broker reports for a topic it does not give ids to (Kafka < 2.8).
_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"


def topic_id(bootstrap: str, topic: str, timeout: float = 10.0) -> str | None:
    """The topic's id: a UUID the broker gives each creation of a topic.

    Kafka offsets are positions in one incarnation of a topic: after the topic is
    deleted and created again (or the in-memory dev broker restarts) they count from 0
    again, so remembered offsets mean something only together with this id. None if the
    broker gives no ids or cannot be asked (callers then trust offsets as before).
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        futures = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)
        desc = futures[topic].result(timeout=timeout + 1)
    except (KafkaException, TimeoutError) as e:
        log.warning(
            "cannot read the id of topic %s (%s): offsets are not checked against it", topic, e
        )
        return None
    tid = str(desc.topic_id) if desc.topic_id is not None else None
    if not tid or tid == _NO_TOPIC_ID:
        log.warning("the broker gives topic %s no id: offsets are not checked against it", topic)
        return None
    return tid


def events_log_id(settings: Settings) -> str | None:
    """The events topic's id (``topic_id``): which incarnation of the log offsets point into."""
    return topic_id(settings.kafka_bootstrap_servers, settings.events_topic)


def ensure_app_topics(settings: Settings) -> None:
    n = settings.topic_partitions
    ensure_topics(
        settings.kafka_bootstrap_servers, {settings.events_topic: n, settings.dead_letter_topic: n}
    )
