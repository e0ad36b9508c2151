"""The events topic as a Bytewax source.

Delivery: at-least-once. Each partition's next offset is its recovery state, so with
Bytewax recovery on, a resumed flow re-reads from the last committed epoch; the fold
makes that exactly-once by skipping offsets a state already applied.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from dataflow import metrics


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
    ``stop`` is set, so an in-process flow (beside the API) shuts down cleanly.

    Delivery: at-least-once (see the module); with ``exit_at_end`` each partition ends
    at the end of the topic as it was read."""

    def __init__(
        self, settings: Settings, stop: threading.Event | None = None, batch_size: int = 1000
    ) -> None:
        self._brokers = settings.kafka.bootstrap_servers
        self._topic = settings.kafka.events_topic
        self._tail = not settings.dataflow.exit_at_end
        self._start = OFFSET_BEGINNING if settings.kafka.start_offset == "earliest" else OFFSET_END
        self._config = consumer_config(settings)
        self._batch_size = batch_size
        self._stop = stop or threading.Event()

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
            "statistics.interval.ms": "1000",
        } | self._config
        start = self._start if resume_state is None else resume_state
        return _Partition(config, self._topic, part, start, self._batch_size, self._stop)


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
