"""The events topic as a Bytewax source, and how far behind the end of the topic the
flow is (``SourceProgress``: consumer lag, stalls).

Delivery: at-least-once. Each partition's next offset is its recovery state, so with
Bytewax recovery on, a resumed flow re-reads from the last committed epoch; the fold
makes that exactly-once by skipping offsets a state already applied.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from dataflow import metrics
from eventlog.health import KafkaView

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = frozenset(
    {
        ConfluentKafkaError._TRANSPORT,
        ConfluentKafkaError._ALL_BROKERS_DOWN,
        ConfluentKafkaError._RESOLVE,
        ConfluentKafkaError._TIMED_OUT,
        ConfluentKafkaError._UNKNOWN_TOPIC,
        ConfluentKafkaError._UNKNOWN_PARTITION,
        ConfluentKafkaError.UNKNOWN_TOPIC_OR_PART,
        ConfluentKafkaError.NOT_LEADER_FOR_PARTITION,
        ConfluentKafkaError.LEADER_NOT_AVAILABLE,
    }
)
"""Consumer errors about the connection or the cluster, not about a message: logged
(the Kafka watch and /readyz report the outage) while librdkafka reconnects, never
dead-lettered (there is no message to keep)."""


class SourceProgress:
    """The flow's position on each partition of the events topic, and from it and the end
    offsets a ``KafkaWatch`` reads, the consumer lag and whether the flow is stuck.

    A position is the next offset the flow takes: the one after the messages it had
    handed on when it last came back to the source for more. A Bytewax worker runs its
    steps (parse, fold, store writes) between two reads, so with one worker everything
    before the position went through the whole flow; with more, it has at least been
    parsed. Lag = end offset - position, per partition, so it keeps growing while the
    flow is stuck or down (librdkafka's statistics only report while it consumes).
    """

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka.events_topic
        self.positions: dict[int, int] = {}
        """Partition -> position; written by the source's partitions, once per batch."""
        self._earliest = settings.kafka.start_offset == "earliest"
        self._stall_after = settings.dataflow.stall_seconds
        self._moved: dict[int, tuple[int, float]] = {}
        self.lag: dict[int, int] = {}
        self.stalled: dict[int, tuple[int, float]] = {}
        """Partition -> (events waiting, seconds without progress) for the stuck ones."""

    def observe(self, view: KafkaView) -> None:
        """Update lag and stalls from one probe's end offsets (a ``KafkaWatch`` listener).

        A partition's clock starts when it is first seen or its position changes (a flow
        started on it moves it), so a flow restarted at the same position, as one failing
        over and over is, stays stalled until it moves."""
        if not view.ends:
            return
        now = time.monotonic()
        lag, stalled = {}, {}
        for part, end in view.ends.items():
            pos = self.positions.get(part)
            if pos is None:  # not read yet: all of it waits, or none (start at the end)
                pos = view.starts.get(part, 0) if self._earliest else end
            waiting = lag[part] = max(0, end - pos)
            metrics.CONSUMER_LAG.labels(self.topic, str(part)).set(waiting)
            last = self._moved.get(part)
            since = now if last is None or waiting == 0 or last[0] != pos else last[1]
            self._moved[part] = (pos, since)
            if waiting and now - since >= self._stall_after:
                stalled[part] = (waiting, now - since)
        self.lag, self.stalled = lag, stalled

    def stall(self) -> str | None:
        """What is stuck, in words; None while every partition moves or has nothing waiting."""
        if not self.stalled:
            return None
        worst, (waiting, seconds) = max(self.stalled.items(), key=lambda kv: kv[1][1])
        return (
            f"stalled: {waiting} event(s) wait on partition {worst} of {self.topic} and the "
            f"flow has not moved there for {seconds:.0f}s"
            + (f" ({len(self.stalled)} partitions stuck)" if len(self.stalled) > 1 else "")
        )


class _Partition(StatefulSourcePartition[Message, int]):
    """One Kafka partition read with a plain confluent consumer.

    Bytewax's own partition wraps each message in a frozen ``KafkaSourceMessage``
    dataclass (~2 us per event, an eighth of the per-event budget); this one hands the
    C ``Message`` objects to the parser as they are. The resume state is the next offset
    to read, as in Bytewax's partition, so recovery snapshots stay compatible. Errors
    about a message are returned as messages, and the parser dead-letters them; errors
    about the connection (``TRANSIENT_ERRORS``) are logged, not returned.
    """

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        part: int,
        offset: int,
        batch_size: int,
        stop: threading.Event,
        positions: dict[int, int],
    ) -> None:
        self._offset = offset
        self._topic = topic
        self._part = part
        self._batch_size = batch_size
        self._stop = stop
        self._eof = False
        self._positions = positions
        if offset >= 0:
            positions[part] = offset
        else:
            positions.pop(part, None)
        self._logged = 0.0
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, part, offset)])

    def next_batch(self) -> list[Message]:
        if self._eof or self._stop.is_set():
            raise StopIteration
        if self._offset >= 0:
            self._positions[self._part] = self._offset  # what went before is through
        msgs = self._consumer.consume(self._batch_size, 0)
        if msgs:
            if any(m.error() is not None for m in msgs):
                msgs = self._drop_non_messages(msgs)
            for m in reversed(msgs):
                off = m.offset()
                if off is not None and off >= 0:
                    self._offset = off + 1
                    break
        return msgs

    def _drop_non_messages(self, msgs: list[Message]) -> list[Message]:
        """Without the end-of-partition markers and the connection errors (logged)."""
        kept = []
        for m in msgs:
            err = m.error()
            if err is None:
                kept.append(m)
            elif err.code() == ConfluentKafkaError._PARTITION_EOF:
                self._eof = True  # only reported when the source does not tail
            elif err.code() in TRANSIENT_ERRORS:
                if time.monotonic() - self._logged > 30:
                    self._logged = time.monotonic()
                    log.warning("Kafka consumer of partition %d: %s", self._part, err)
            else:
                kept.append(m)
        return kept

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class StoppableKafkaSource(FixedPartitionedSource[Message, int]):
    """The events topic as a Bytewax source: partitions are the unit of parallelism,
    each partition's next offset is its recovery state, and the partitions end when
    ``stop`` is set, so an in-process flow (beside the API) shuts down cleanly.

    Delivery: at-least-once (see the module); with ``exit_at_end`` each partition ends
    at the end of the topic as it was read."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event | None = None,
        progress: SourceProgress | None = None,
        topic: str | None = None,
    ) -> None:
        """``topic``: the events topic unless given (the items topic, for the catalogue)."""
        self._brokers = settings.kafka.bootstrap_servers
        self._topic = topic or settings.kafka.events_topic
        self._tail = not settings.dataflow.exit_at_end
        self._start = OFFSET_BEGINNING if settings.kafka.start_offset == "earliest" else OFFSET_END
        self._config = consumer_config(settings)
        self._batch_size = settings.kafka.poll_batch
        self._stop = stop or threading.Event()
        self._positions = (progress or SourceProgress(settings)).positions

    def list_parts(self) -> list[str]:
        """``"<partition>-<topic>"``: the names Bytewax's own Kafka source gives them,
        under which recovery keeps each partition's offset."""
        admin = AdminClient({"bootstrap.servers": self._brokers})
        meta = admin.list_topics(self._topic).topics[self._topic]
        if meta.error is not None:
            raise RuntimeError(
                f"cannot list the partitions of Kafka topic {self._topic!r}: {meta.error.str()}"
            )
        return [f"{i}-{self._topic}" for i in meta.partitions]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        part = int(for_part.split("-", 1)[0])
        config = {
            "bootstrap.servers": self._brokers,
            "group.id": "recsys-dataflow",  # offsets live in Bytewax recovery, not Kafka
            "enable.auto.commit": "false",
            "enable.partition.eof": str(not self._tail).lower(),
        } | self._config
        start = self._start if resume_state is None else resume_state
        return _Partition(
            config, self._topic, part, start, self._batch_size, self._stop, self._positions
        )


def consumer_config(settings: Settings) -> dict[str, str]:
    """librdkafka settings for the source: answer fetches fast (freshness), then the
    operator's extras."""
    config = {
        "fetch.wait.max.ms": str(settings.kafka.fetch_wait_ms),
        "fetch.error.backoff.ms": "50",
        # A recovered position beyond the end of the partition (the topic was recreated)
        # restarts where the start policy says, never silently at the end.
        "auto.offset.reset": "earliest" if settings.kafka.start_offset == "earliest" else "latest",
    }
    return config | {k: str(v) for k, v in settings.kafka.consumer_config.items()}
