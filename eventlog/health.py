"""Is Kafka there, and how far does the events topic reach: ``KafkaWatch`` probes the
cluster on a thread of its own every ``kafka.probe_seconds``.

One probe is a topic description (reachability, the topic's id and partitions) and the
partitions' end offsets. The API answers ``/readyz`` and fails ``POST /events`` fast
from it; the in-process dataflow computes its consumer lag from the end offsets, and
restarts on a recreated events topic when the id changes. Nothing here produces or
consumes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import Gauge

from core.settings import Settings

_T = TypeVar("_T")

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0
"""How long one request of a probe may wait for the cluster before Kafka counts as away."""

# The id a broker reports for a topic it does not give ids to (Kafka < 2.8).
_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"

CLOSE_TIMEOUT_SECONDS = 3 * (PROBE_TIMEOUT_SECONDS + 1.0) + 1.0
"""The longest ``close`` waits: one probe's three requests, each timed out."""

KAFKA_REACHABLE = Gauge(
    "recsys_kafka_reachable", "1 while the last probe of the Kafka cluster was answered, else 0"
)


@dataclass(frozen=True, slots=True)
class KafkaView:
    """What one probe found."""

    reachable: bool
    """The cluster answered (whether or not the topic exists)."""
    error: str | None = None
    """Why Kafka, the topic or its offsets could not be read; None: all were."""
    topic_exists: bool = False
    topic_id: str | None = None
    """The topic's id (``eventlog.admin.topic_id``); None if it has none or is missing."""
    ends: Mapping[int, int] = field(default_factory=dict)
    """Each partition's end offset (high watermark): the offset the next record gets."""
    starts: Mapping[int, int] = field(default_factory=dict)
    """Each partition's first offset still held (low watermark)."""
    at: float = 0.0
    """``time.monotonic()`` of the probe; 0: no probe yet."""


class KafkaWatch:
    """Probes the cluster and the events topic every ``kafka.probe_seconds``.

    ``view`` is the latest probe; ``outages`` counts how often the cluster stopped
    answering (a producer made before an outage may be stale: a restarted in-memory broker
    forgot its id). Listeners get each new view on the watch's thread.
    """

    def __init__(self, settings: Settings) -> None:
        self._bootstrap = settings.kafka.bootstrap_servers
        self._topic = settings.kafka.events_topic
        self._every = settings.kafka.probe_seconds
        self._admin: AdminClient | None = AdminClient(
            {"bootstrap.servers": self._bootstrap, "log_level": 0}
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-watch", daemon=True)
        self._listeners: list[Callable[[KafkaView], None]] = []
        self._down_since: float | None = None
        self.view = KafkaView(False, "not probed yet")
        self.outages = 0

    def add_listener(self, listener: Callable[[KafkaView], None]) -> None:
        self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Callable[[KafkaView], None]) -> None:
        self._listeners = [x for x in self._listeners if x != listener]

    def start(self) -> KafkaWatch:
        """Probe now and then every interval, on the watch's thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop probing: a probe under way is waited for (its requests time out within
        ``PROBE_TIMEOUT_SECONDS`` each), then the admin client is destroyed here, not left
        to the garbage collector: a frozen (``gc.freeze``) or cyclic owner would keep its
        librdkafka threads reconnecting until the interpreter's exit, which they may crash."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_TIMEOUT_SECONDS)
            if self._thread.is_alive():
                log.warning("the Kafka watch did not stop within %.0fs", CLOSE_TIMEOUT_SECONDS)
                return
        self._admin = None

    @property
    def probed(self) -> bool:
        """True once a probe has answered or failed."""
        return self.view.at != 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            view = self.probe()
            if self._stop.is_set():
                return
            self._update(view)
            self._stop.wait(self._every)

    def _update(self, view: KafkaView) -> None:
        was = self.view
        self.view = view
        KAFKA_REACHABLE.set(1 if view.reachable else 0)
        if not view.reachable and (was.reachable or was.at == 0.0):
            self.outages += 1
            self._down_since = view.at
            log.warning("cannot reach Kafka at %s: %s", self._bootstrap, view.error)
        elif view.reachable and not was.reachable and was.at:
            log.info("Kafka at %s answers again", self._bootstrap)
        for listener in self._listeners:
            try:
                listener(view)
            except Exception:
                log.exception("a Kafka watch listener failed")

    @property
    def reachable(self) -> bool:
        """False only once a probe failed: before the first probe, Kafka is given the benefit."""
        return self.view.reachable or self.view.at == 0.0

    def check(self) -> tuple[bool, str]:
        """For ``/readyz``: (Kafka answered the last probe, what the probe found). Unlike
        ``reachable``, not passed before a first probe answered."""
        if not self.probed:
            return False, f"probing Kafka at {self._bootstrap}"
        problem = self.problem()
        if problem is not None:
            return False, problem
        return True, "ok" if self.view.error is None else f"answers, but {self.view.error}"

    def problem(self) -> str | None:
        """Why Kafka is unusable, for ``/readyz`` and a 503; None while it answers."""
        view = self.view
        if view.reachable or view.at == 0.0:
            return None
        since = (
            "" if self._down_since is None else f" for {time.monotonic() - self._down_since:.0f}s"
        )
        return f"cannot reach Kafka at {self._bootstrap}{since}: {view.error}"

    def probe(self) -> KafkaView:
        """Describe the events topic and read its partitions' offsets, now."""
        now = time.monotonic()
        admin = self._admin
        if admin is None:
            return KafkaView(False, "the watch is closed", at=now)
        try:
            desc = self._wait(
                admin.describe_topics(
                    TopicCollection([self._topic]), request_timeout=PROBE_TIMEOUT_SECONDS
                )[self._topic]
            )
        except KafkaException as e:
            err = e.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return KafkaView(True, f"topic {self._topic} does not exist", at=now)
            return KafkaView(False, _describe(err), at=now)
        except concurrent.futures.TimeoutError:
            return KafkaView(False, f"no answer within {PROBE_TIMEOUT_SECONDS}s", at=now)
        tid = None if desc.topic_id is None else str(desc.topic_id)
        parts = [TopicPartition(self._topic, p.id) for p in desc.partitions]
        try:
            ends = self._offsets(admin, parts, OffsetSpec.latest())
            starts = self._offsets(admin, parts, OffsetSpec.earliest())
        except (KafkaException, concurrent.futures.TimeoutError) as e:
            error = f"cannot read the offsets of topic {self._topic}: {e}"
            return KafkaView(True, error, True, _real_id(tid), at=now)
        return KafkaView(True, None, True, _real_id(tid), ends, starts, now)

    def _offsets(
        self, admin: AdminClient, parts: list[TopicPartition], spec: OffsetSpec
    ) -> dict[int, int]:
        if not parts:
            return {}
        futures = admin.list_offsets(
            {tp: spec for tp in parts}, request_timeout=PROBE_TIMEOUT_SECONDS
        )
        return {tp.partition: self._wait(f).offset for tp, f in futures.items()}

    @staticmethod
    def _wait(future: concurrent.futures.Future[_T]) -> _T:
        """The future's result, or a fresh ``KafkaException`` with its error: raising the
        future's own exception would add this frame, and the admin client it holds, to
        that exception's traceback, a cycle only the garbage collector could free."""
        error = future.exception(timeout=PROBE_TIMEOUT_SECONDS + 1.0)
        if error is not None:
            raise KafkaException(*error.args) from None
        return future.result()


def _real_id(tid: str | None) -> str | None:
    return None if not tid or tid == _NO_TOPIC_ID else tid


def _describe(err: object) -> str:
    return err.str() if isinstance(err, KafkaError) else str(err)
