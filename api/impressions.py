"""What each response served, produced to Kafka for joining later clicks to impressions.

Never on the request's critical path: ``log`` encodes and hands the message to
librdkafka's queue (a few microseconds) and returns; a background thread serves
delivery reports. A full queue or a broker that is away loses impressions, counted in
``recsys_impressions_total{result="failed"|"dropped"}``; it never fails a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import msgspec
from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import Counter

from core.settings import Settings

log = logging.getLogger(__name__)

IMPRESSIONS = Counter(
    "recsys_impressions_total",
    "Impression messages: sent (acknowledged), failed (delivery error), dropped (queue full)",
    ["result"],
)


class Impression(msgspec.Struct):
    request_id: str
    user_id: str
    items: list[str]
    positions: list[int]
    """1-based rank of each item in the response."""
    scores: list[float]
    model_version: str
    variant: str
    strategy: str
    ts: float


_encode = msgspec.json.Encoder().encode
decode_impression = msgspec.json.Decoder(Impression).decode


class ImpressionLog:
    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka.impressions_topic
        self._bootstrap = settings.kafka.bootstrap_servers
        self._partitions = settings.kafka.topic_partitions
        self._producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "partitioner": "murmur2_random",
                "linger.ms": 20,
                "queue.buffering.max.messages": 100_000,
                "message.timeout.ms": 30_000,
                "acks": 1,
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
        self._sent = IMPRESSIONS.labels("sent")
        self._failed = IMPRESSIONS.labels("failed")
        self._dropped = IMPRESSIONS.labels("dropped")

    def start(self) -> ImpressionLog:
        self._thread.start()
        return self

    def _run(self) -> None:
        from eventlog.admin import ensure_topics

        try:
            ensure_topics(self._bootstrap, {self.topic: self._partitions})
        except Exception as e:  # the broker may come later; produce() will retry
            log.warning("could not create topic %s: %s", self.topic, e)
        while not self._stop.is_set():
            self._producer.poll(0.2)

    def _delivered(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self._sent.inc()
        else:
            self._failed.inc()

    def log(
        self,
        request_id: str,
        user_id: str,
        items: Sequence[str],
        scores: Sequence[float],
        model_version: str,
        variant: str,
        strategy: str,
    ) -> None:
        msg = Impression(
            request_id,
            user_id,
            list(items),
            list(range(1, len(items) + 1)),
            [round(s, 5) for s in scores],
            model_version,
            variant,
            strategy,
            time.time(),
        )
        try:
            self._producer.produce(
                self.topic, _encode(msg), user_id.encode(), on_delivery=self._delivered
            )
        except (BufferError, KafkaException):
            self._dropped.inc()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._producer.flush(timeout)
