"""What each response served, produced to Kafka for joining later clicks to impressions.

Never on the request's critical path: ``log`` encodes and hands the message to
librdkafka's queue (a few microseconds) and returns; a background thread serves
delivery reports. A full queue or a broker that is away loses impressions, counted in
``recsys_impressions_total{result="failed"|"dropped"}``; it never fails a request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
from prometheus_client import Counter

from core.settings import Settings
from eventlog.producer import BackgroundProducer

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
    """Each item's score as the response showed it."""
    model_version: str
    variant: str
    strategy: str
    ts: float


_encode = msgspec.json.Encoder().encode
decode_impression = msgspec.json.Decoder(Impression).decode


class ImpressionLog:
    """The impressions topic: one message per response, keyed by user, produced by a
    ``BackgroundProducer`` (at-most-once: a lost impression never fails a request)."""

    def __init__(self, settings: Settings) -> None:
        self._producer = BackgroundProducer(
            settings, settings.kafka.impressions_topic, self._delivered, "impressions"
        )
        self.topic = self._producer.topic
        self._sent = IMPRESSIONS.labels("sent")
        self._failed = IMPRESSIONS.labels("failed")
        self._dropped = IMPRESSIONS.labels("dropped")

    def start(self) -> ImpressionLog:
        self._producer.start()
        return self

    def _delivered(self, ok: bool) -> None:
        if ok:
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
            list(scores),
            model_version,
            variant,
            strategy,
            time.time(),
        )
        if not self._producer.send(user_id.encode(), _encode(msg)):
            self._dropped.inc()

    def close(self, timeout: float = 5.0) -> None:
        self._producer.close(timeout)
