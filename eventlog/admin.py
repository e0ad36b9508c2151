"""Kafka administration against any broker: is one there, create the topics, which
incarnation of a topic this is.

confluent-kafka's AdminClient throughout. Nothing here produces or consumes.
"""

from __future__ import annotations

import logging
import socket
import time

from confluent_kafka import KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from core.settings import Settings

log = logging.getLogger(__name__)


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


class TopicNotCreated(RuntimeError):
    """The broker refused to create a topic (other than because it exists already)."""

    def __init__(self, topic: str, error: KafkaException) -> None:
        super().__init__(f"cannot create topic {topic}: {error}")
        self.topic = topic
        self.error = error


def create_topics(
    bootstrap: str, topics: dict[str, int], replication_factor: int = 1, timeout: float = 10.0
) -> dict[str, int]:
    """Create the topics missing (name -> partitions); existing ones are left as they are.

    Returns name -> partitions created (0: it existed), in the order given. Raises
    ``TopicNotCreated`` for the first topic the broker would not create, KafkaException
    when the broker does not answer within ``timeout``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    created = {t: 0 for t in topics if t in existing}
    missing = [NewTopic(t, n, replication_factor) for t, n in topics.items() if t not in existing]
    for topic, fut in admin.create_topics(missing).items() if missing else ():
        try:
            fut.result(timeout=timeout)
            created[topic] = topics[topic]
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise TopicNotCreated(topic, e) from e
            created[topic] = 0
        log.info("created topic %s", topic)
    return {t: created[t] for t in topics}


def ensure_topics(bootstrap: str, topics: dict[str, int], timeout: float = 10.0) -> None:
    """Create missing topics (name -> partitions), one replica each."""
    create_topics(bootstrap, topics, timeout=timeout)


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


def end_offsets(bootstrap: str, topic: str, timeout: float = 5.0) -> dict[int, int]:
    """Each partition's end offset (the offset its next message gets). Raises
    KafkaException when the broker does not answer within ``timeout``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(topic, timeout=timeout).topics[topic]
    if meta.error is not None:
        raise KafkaException(meta.error)
    specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in meta.partitions}
    futures = admin.list_offsets(specs, request_timeout=timeout)
    return {tp.partition: f.result(timeout=timeout + 1).offset for tp, f in futures.items()}


def events_log_id(settings: Settings) -> str | None:
    """The events topic's id (``topic_id``): which incarnation of the log offsets point into."""
    return topic_id(settings.kafka.bootstrap_servers, settings.kafka.events_topic)


def ensure_app_topics(settings: Settings) -> None:
    """The topics the dataflow reads and writes: events, catalogue writes, dead letters."""
    k = settings.kafka
    n = k.topic_partitions
    ensure_topics(
        k.bootstrap_servers, {k.events_topic: n, k.items_topic: n, k.dead_letter_topic: n}
    )
