"""Every producer of the project, one per role, all confluent-kafka (librdkafka):

- ``EventProducer``: ``POST /events``, ``DELETE /users/{id}`` (the erasure marker) and the
  catalogue writes of ``POST/PATCH/DELETE /items`` (``send_items``, to the items topic);
  blocks until the broker acknowledged every message.
- ``BackgroundProducer``: the API's impression log; never blocks nor fails a request.
- ``replay_producer``: ``recsys replay``; acknowledged, idempotent, paced by the caller.
- ``bulk_config`` / ``bulk_producer``: benchmarks; tuned for throughput.

Plus the dead-letter headers every writer of a dead letter uses (``dlq_headers``).

Events are keyed by user, so each user's events stay in order on one partition.
``PRODUCER_CONFIG`` makes every producer hash keys with murmur2, as the Java client does
(librdkafka's default hash differs): one user lands on one partition whichever client
produced, the dataflow's dead-letter sink included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from core import items
from core.events import ErasureMarker, ValidEvent, encode, encode_erasure
from core.records import iso
from core.settings import Settings
from eventlog.admin import end_offsets, ensure_topics, topic_id
from eventlog.health import KafkaWatch

log = logging.getLogger(__name__)

PRODUCER_CONFIG = {"partitioner": "murmur2_random"}

SEND_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.2
"""How long the delivery-report thread waits for a report before checking for stop."""
TOPIC_TIMEOUT_SECONDS = 2.0
"""How long a background producer's start may wait for the broker to create its topic."""
ACK_CHECK_SECONDS = 0.25
"""While a send waits for acknowledgements, how often it asks the Kafka watch."""


class ProducerUnavailable(RuntimeError):
    """Kafka could not take the events; the API answers 503 and the client may retry."""


@dataclass(frozen=True, slots=True)
class MarkerSent:
    """An erasure marker the events topic acknowledged, and where it sits."""

    marker: ErasureMarker
    partition: int
    offset: int
    log_id: str | None
    """The events topic's id (``eventlog.admin.topic_id``): the incarnation offsets count in."""


class _Polled:
    """A producer and the daemon thread that serves its delivery reports (and logs), so
    callers only ever queue messages. ``before_polling``, if any, runs first on that thread.

    ``close`` stops the thread, delivers what is queued (or gives it up after the
    timeout) and destroys the librdkafka client, so no connection or broker thread
    outlives its owner (a client left to the interpreter's exit keeps reconnecting to a
    broker that is gone, and may crash the exit).
    """

    def __init__(
        self,
        producer: Producer,
        name: str,
        before_polling: Callable[[], None] | None = None,
        before_seconds: float = 0.0,
    ) -> None:
        self.producer = producer
        self._before = before_polling
        self._before_seconds = before_seconds
        """The longest ``before_polling`` takes: ``close`` waits for it on top."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if self._before is not None:
            self._before()
        while not self._stop.is_set():
            try:
                self.producer.poll(POLL_SECONDS)
            except KafkaException as e:  # keep serving reports: they carry the error too
                log.error("Kafka producer error: %s", e)
                self._stop.wait(POLL_SECONDS)
            except RuntimeError:  # closed under us: close gave up waiting for this thread
                return

    def close(self, timeout: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout + self._before_seconds)
        close_producer(self.producer, timeout)


def close_producer(producer: Producer, timeout: float) -> int:
    """Deliver what ``producer`` holds within ``timeout``, give the rest up (each message
    gets its delivery report, failed) and destroy the client. Returns how many messages
    were given up. Closing twice is harmless."""
    try:
        left = producer.flush(timeout)
        if left:
            producer.purge()
            producer.flush(0)  # serve the purged messages' (failed) delivery reports
        producer.close()
    except RuntimeError:  # closed already
        return 0
    return left


class _Acks:
    """Delivery reports of one request's messages; ``wait`` returns once all are in."""

    def __init__(self, expected: int) -> None:
        self._pending = expected
        self._lock = threading.Lock()
        self._done = threading.Event()
        if expected <= 0:
            self._done.set()
        self.error: KafkaError | None = None
        self.last: Message | None = None
        """The message reported last (its partition and offset, once acknowledged)."""

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is not None and self.error is None:
                self.error = err
            self.last = msg
            self._pending -= 1
            if self._pending <= 0:
                self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)


_STUCK = (KafkaError._FATAL, KafkaError.UNKNOWN_PRODUCER_ID, KafkaError._MSG_TIMED_OUT)


def _stuck(err: KafkaError) -> bool:
    """After this error the producer may never deliver again: a fatal error makes it
    refuse every message, and a broker that forgot its producer id (a restarted
    in-memory broker) leaves it retrying until every message times out."""
    return err.fatal() or err.code() in _STUCK


class EventProducer:
    """Produces the events ``POST /events`` accepted, keyed by user, to the events topic,
    the erasure markers of ``DELETE /users/{id}`` (``erase``), the same way, and the
    catalogue writes of ``/items`` (``send_items``), keyed by item, to the items topic.

    Delivery: ``send`` returns only once every event is acknowledged by all in-sync
    replicas (``acks=all``), so a 202 means the events are in the log. Otherwise it
    raises ``ProducerUnavailable`` (the API answers 503): at once while ``watch`` (if
    given) finds the cluster unreachable, within ``CONNECT_TIMEOUT_SECONDS`` until the
    producer first reached a broker, then within ``SEND_TIMEOUT_SECONDS`` (librdkafka's
    retries included). After a 503 some events may be in the log all the same, so a
    client that retries gets at-least-once.

    Idempotent: librdkafka's own retries never write an event twice nor reorder a
    user's events. The librdkafka producer is made on the first ``send`` that finds a
    broker answering, and kept; until then each ``send`` tries again with a new one, so
    the first request after a broker comes up succeeds without waiting out a reconnection
    back-off. A ``send`` that timed out or hit a fatal error leaves its producer behind
    (``_stuck``): the next ``send`` starts a new one, and so does the first ``send`` after
    ``watch`` saw the cluster away (a restarted in-memory broker forgot the producer's id).
    """

    def __init__(self, settings: Settings, watch: KafkaWatch | None = None) -> None:
        self._bootstrap = settings.kafka.bootstrap_servers
        self._servers = self._bootstrap.split(",")
        self._topic = settings.kafka.events_topic
        self._items_topic = settings.kafka.items_topic
        self._watch = watch
        self._polled: _Polled | None = None
        self._outages = 0
        """``watch.outages`` when the current producer was made."""
        self._lock = threading.Lock()
        self._closing: list[threading.Thread] = []
        """Threads closing discarded producers; ``close`` waits for them."""

    def _config(self) -> dict[str, object]:
        return {
            "bootstrap.servers": self._bootstrap,
            **PRODUCER_CONFIG,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 1,
            "message.timeout.ms": int(SEND_TIMEOUT_SECONDS * 1000),
            "logger": log,  # librdkafka's log lines into the service's (JSON) logs
        }

    def _get(self) -> _Polled:
        watch = self._watch
        if watch is not None:
            problem = watch.problem()
            if problem is not None:
                raise ProducerUnavailable(problem)
            if self._polled is not None and watch.outages != self._outages:
                self._discard(self._polled)
        polled = self._polled
        if polled is None:
            with self._lock:
                if self._polled is None:
                    self._outages = 0 if watch is None else watch.outages
                    self._polled = self._connect()
                polled = self._polled
        return polled

    def _discard(self, polled: _Polled) -> None:
        """The next ``send`` makes a new producer; this one reports what other requests
        still wait for (or fails it) on a thread of its own, then goes."""
        closing = threading.Thread(
            target=polled.close, args=(SEND_TIMEOUT_SECONDS,), name="producer-close", daemon=True
        )
        with self._lock:
            if self._polled is polled:
                self._polled = None
            self._closing = [t for t in self._closing if t.is_alive()] + [closing]
        closing.start()

    def _connect(self) -> _Polled:
        producer = Producer(self._config())
        try:
            # A metadata round trip: fail a request in seconds, not minutes, when Kafka is away.
            producer.list_topics(timeout=CONNECT_TIMEOUT_SECONDS)
        except KafkaException as e:
            raise ProducerUnavailable(f"cannot reach Kafka at {self._servers}: {e}") from e
        polled = _Polled(producer, "events-producer")
        polled.start()
        return polled

    def send(self, events: Sequence[ValidEvent]) -> None:
        """Blocks until the broker acknowledged every event, so 202 means durable."""
        self._deliver([(e.user_id.encode(), encode(e)) for e in events], "the events")

    def send_items(self, writes: Sequence[items.ItemWrite]) -> None:
        """Produce catalogue writes keyed by item id (one item's writes stay in order on
        one partition); blocks until the broker acknowledged every one, so 202 means durable."""
        messages = [(w.item_id.encode(), items.encode(w)) for w in writes]
        self._deliver(messages, "the item writes", self._items_topic)

    def erase(self, user_id: str) -> MarkerSent:
        """Produce ``user_id``'s erasure marker (keyed by the user, carrying each
        partition's end offset) and block until the broker acknowledged it."""
        try:
            before = end_offsets(self._bootstrap, self._topic, CONNECT_TIMEOUT_SECONDS)
        except (KafkaException, TimeoutError) as e:
            raise ProducerUnavailable(f"cannot read the end offsets of {self._topic}: {e}") from e
        log_id = topic_id(self._bootstrap, self._topic, CONNECT_TIMEOUT_SECONDS)
        marker = ErasureMarker(user_id, time.time(), before)
        acks = self._deliver([(user_id.encode(), encode_erasure(marker))], "the erasure")
        assert acks.last is not None
        partition, offset = acks.last.partition(), acks.last.offset()
        assert partition is not None and offset is not None  # set on every delivered message
        return MarkerSent(marker, partition, offset, log_id)

    def _deliver(
        self, messages: list[tuple[bytes, bytes]], what: str, topic: str | None = None
    ) -> _Acks:
        """Produce (key, value) messages to ``topic`` (default: the events topic); return
        once the broker acknowledged them all."""
        polled = self._get()
        acks = _Acks(len(messages))
        try:
            for key, value in messages:
                polled.producer.produce(
                    topic or self._topic, value, key, on_delivery=acks.delivered
                )
        except (BufferError, KafkaException) as e:
            if isinstance(e, KafkaException) and _stuck(e.args[0]):
                self._discard(polled)
            raise ProducerUnavailable(f"Kafka did not acknowledge {what}: {e}") from e
        self._wait(polled, acks, what)
        if acks.error is not None:
            if _stuck(acks.error):
                self._discard(polled)
            raise ProducerUnavailable(f"Kafka did not acknowledge {what}: {acks.error}")
        return acks

    def _wait(self, polled: _Polled, acks: _Acks, what: str) -> None:
        """Until every event is acknowledged, or fail: the watch finds Kafka away, or the
        send timeout passed (librdkafka reports every message by message.timeout.ms; the
        half second is slack)."""
        deadline = time.monotonic() + SEND_TIMEOUT_SECONDS + 0.5
        while not acks.wait(ACK_CHECK_SECONDS):
            problem = None if self._watch is None else self._watch.problem()
            if problem is None and time.monotonic() < deadline:
                continue
            self._discard(polled)
            raise ProducerUnavailable(
                f"{problem}; some of {what} may be in the log all the same"
                if problem
                else f"Kafka did not acknowledge {what} within {SEND_TIMEOUT_SECONDS:.0f}s"
            )

    def close(self) -> None:
        """Deliver or give up what is queued, destroy every producer made, and wait for
        the ones being discarded."""
        with self._lock:
            polled, self._polled = self._polled, None
            closing, self._closing = self._closing, []
        if polled is not None:
            polled.close(timeout=SEND_TIMEOUT_SECONDS)
        for t in closing:
            t.join(SEND_TIMEOUT_SECONDS + 1)


class BackgroundProducer:
    """Fire-and-forget messages to one topic: ``send`` hands a message to librdkafka's
    queue (a few microseconds) and returns; a background thread serves the delivery
    reports and passes each outcome (True: acknowledged) to ``on_delivery``.

    Delivery: at-most-once. Acknowledged by the partition leader only (``acks=1``); a
    full local queue drops the message (``send`` returns False); a message librdkafka
    could not deliver within 30 s is reported failed and not sent again.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        on_delivery: Callable[[bool], None],
        thread_name: str = "background-producer",
    ) -> None:
        self.topic = topic
        self._bootstrap = settings.kafka.bootstrap_servers
        self._partitions = settings.kafka.topic_partitions
        self._on_delivery = on_delivery
        producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                **PRODUCER_CONFIG,
                "linger.ms": 20,
                "queue.buffering.max.messages": 100_000,
                "message.timeout.ms": 30_000,
                "acks": 1,
            }
        )
        # Topic creation: one listing and one creation, each within the timeout.
        self._polled = _Polled(
            producer, thread_name, self._create_topic, 2 * TOPIC_TIMEOUT_SECONDS + 1.0
        )

    def start(self) -> BackgroundProducer:
        self._polled.start()
        return self

    def _create_topic(self) -> None:
        try:
            ensure_topics(self._bootstrap, {self.topic: self._partitions}, TOPIC_TIMEOUT_SECONDS)
        except Exception as e:  # the broker may come later; produce() will retry
            log.warning("could not create topic %s: %s", self.topic, e)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        self._on_delivery(err is None)

    def send(self, key: bytes, value: bytes) -> bool:
        """Queue one message; False if it was dropped (the local queue is full)."""
        try:
            self._polled.producer.produce(self.topic, value, key, on_delivery=self._delivered)
        except (BufferError, KafkaException, RuntimeError):  # RuntimeError: closed
            return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        self._polled.close(timeout)


def replay_producer(bootstrap: str) -> Producer:
    """For replaying a log: the caller produces, paces, polls and flushes.

    Delivery: acknowledged by all in-sync replicas (``acks=all``) and idempotent, so a
    retry never duplicates nor reorders a user's events; a message librdkafka could not
    deliver within 30 s is reported to the caller's ``on_delivery`` and not sent again.
    """
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
            **PRODUCER_CONFIG,
        }
    )


def bulk_config(bootstrap: str, **extra: object) -> dict[str, object]:
    """The producer settings (murmur2) tuned for bulk throughput; ``extra`` overrides."""
    return {
        "bootstrap.servers": bootstrap,
        **PRODUCER_CONFIG,
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 1_048_576,
        **extra,
    }


def bulk_producer(bootstrap: str, **extra: object) -> Producer:
    """For loading a topic fast (benchmarks): the caller produces, polls and flushes.

    Delivery: librdkafka's defaults (``acks=all``, retries within 300 s), not
    idempotent; failures go to an ``on_delivery`` callback given in ``extra``.
    """
    return Producer(bulk_config(bootstrap, **extra))


def dlq_headers(
    reason: str,
    kind: str,
    source: str,
    original: Sequence[tuple[str, bytes | None]] | None = None,
) -> list[tuple[str, bytes | None]]:
    """The headers of every dead letter, whoever writes it (the dataflow, `recsys replay`):
    the ``original`` message's own headers as they were, then ``dlq.reason``, ``dlq.kind``,
    ``dlq.source`` and ``dlq.time`` (last, so a reader keeping the last value of a name
    reads these even if the producer sent its own ``dlq.*``)."""
    return [
        *(original or ()),
        ("dlq.reason", reason.encode(errors="backslashreplace")),
        ("dlq.kind", kind.encode()),
        ("dlq.source", source.encode(errors="backslashreplace")),
        ("dlq.time", (iso(time.time()) or "").encode()),
    ]
