"""`recsys replay`: feed an event log into the Kafka events topic as it happened, or a
file of catalogue writes into the items topic (``--items``).

The log is a JSON-lines file (one event per line, the shape ``POST /events`` takes) or
MovieLens ratings (``rating`` events). Events are keyed by user, like the API produces
them, so each user's events keep their order on one partition. They are sent with the
log's own time gaps divided by ``speed`` (60: an hour of log per minute; 0: as fast as
possible), optionally capped at ``rate`` events/s.

Every line goes through the event contract the dataflow applies (``core.events``).
A line it rejects is never dropped silently: it goes to the dead-letter topic with the
headers the dataflow writes (``dlq.reason``, ``dlq.kind``, ``dlq.source`` =
``<file>:<line>``), or, with ``strict``, the whole file is checked first and nothing is
sent if any line is invalid.

A file of catalogue writes holds one items-topic message per line (``{"op": "upsert",
...}``, ``"patch"``, ``"delete"``: ``core.items``), checked with that contract and sent
keyed by item id, in file order; a line it refuses is reported with its reason and not
sent (no dead letter: nothing reads the file's rejects but the operator).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from core import items
from core.events import Event, InvalidEvent, ValidEvent, decode, encode, validate
from core.settings import Settings
from eventlog.producer import dlq_headers, replay_producer
from training.data import load_movielens

MAX_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A valid event of the log; ``ts`` is None when the line carried no timestamp."""

    line: int
    event: ValidEvent
    ts: float | None


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line the event contract rejects, with the reason the dataflow would give."""

    line: int
    raw: bytes
    reason: str
    kind: str


Record = LogEvent | BadLine


# --- sources ------------------------------------------------------------------------


def read_jsonl(
    path: Path,
    event_types: Iterable[str],
    max_future_seconds: float = math.inf,
    oldest: float = -math.inf,
) -> Iterator[Record]:
    """Each non-blank line as a LogEvent or a BadLine, in file order.

    ``max_future_seconds`` rejects events stamped that far ahead of now and ``oldest``
    (Unix seconds) those stamped before it, as the dataflow would (pass ``inf``/``-inf``
    when the events are re-stamped anyway)."""
    accepted = frozenset(event_types)
    now = time.time()
    with Path(path).open("rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                event = decode(raw)
                valid = validate(
                    event, accepted, now, max_future_seconds, fallback_ts=now, min_ts=oldest
                )
            except InvalidEvent as e:
                yield BadLine(n, raw, str(e), e.kind)
                continue
            yield LogEvent(n, valid, None if event.timestamp is None else valid.ts)


@dataclass(frozen=True, slots=True)
class ItemLine:
    """A valid catalogue write of an items file."""

    line: int
    write: items.ItemWrite


def read_item_writes(path: Path) -> Iterator[ItemLine | BadLine]:
    """Each non-blank line of a catalogue-write file, checked with the items contract
    (``core.items.decode``, as the dataflow decodes the topic), in file order."""
    with Path(path).open("rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                yield ItemLine(n, items.decode(raw))
            except items.InvalidItem as e:
                yield BadLine(n, raw, str(e), e.kind)


def count_lines(path: Path) -> int:
    """Non-blank lines, for the progress bar's total."""
    with Path(path).open("rb") as f:
        return sum(1 for line in f if line.strip())


def movielens_events(data_dir: Path) -> tuple[int, Iterator[Record]]:
    """MovieLens ratings as ``rating`` events in time order (the loader the training and
    the demo use), with how many there are."""
    inter, _ = load_movielens(data_dir)

    def events() -> Iterator[Record]:
        rows = zip(inter.user_ids, inter.item_ids, inter.ts, inter.event_types, strict=True)
        for n, (user, item, ts, kind) in enumerate(rows, start=1):
            yield LogEvent(n, ValidEvent(str(kind), str(user), str(item), float(ts), None), ts)

    return len(inter), events()


# --- pacing (pure) ------------------------------------------------------------------


def pace(
    timestamps: Iterable[float | None], speed: float, rate: float | None = None
) -> Iterator[float]:
    """When each event is due, in seconds after the first one is sent.

    The log's clock is the latest timestamp seen so far: an event older than one before
    it (an out-of-order log) is due at once, never earlier than the one before, and an
    event without a timestamp is due with the one before it. ``speed`` divides the gaps
    (0: no waiting); ``rate`` spaces events at least ``1/rate`` s apart.
    """
    if speed < 0:
        raise ValueError("speed must be >= 0")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0")
    start: float | None = None
    clock: float | None = None
    prev: float | None = None
    for ts in timestamps:
        if ts is not None:
            clock = ts if clock is None else max(clock, ts)
            start = clock if start is None else start
        due = 0.0 if speed == 0 or clock is None or start is None else (clock - start) / speed
        if prev is not None:
            due = max(due, prev + (1.0 / rate if rate else 0.0))
        prev = due
        yield due


def schedule(
    timestamps: Iterable[float | None], speed: float, rate: float | None = None
) -> list[float]:
    """``pace`` as a list."""
    return list(pace(timestamps, speed, rate))


# --- sending ------------------------------------------------------------------------


@dataclass
class ReplayStats:
    sent: int = 0
    invalid: int = 0
    skipped: int = 0
    """Valid events outside --since/--until."""
    failed: int = 0
    """Records (events or dead letters) Kafka did not acknowledge."""
    seconds: float = 0.0
    first_ts: float | None = None
    last_ts: float | None = None
    examples: list[BadLine] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def note_invalid(self, bad: BadLine) -> None:
        self.invalid += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(bad)


@dataclass(frozen=True)
class ReplayOptions:
    speed: float = 1.0
    rate: float | None = None
    retime: bool = False
    limit: int | None = None
    since: float | None = None
    until: float | None = None
    source_name: str = "replay"
    """Names the log in the dead-letter header ``dlq.source`` (``<name>:<line>``)."""


def producer_for(settings: Settings) -> Producer:
    """The replay producer (``eventlog.producer.replay_producer``) for the configured broker."""
    return replay_producer(settings.kafka.bootstrap_servers)


def _wire(rec: LogEvent, retime: bool) -> bytes:
    ev = rec.event
    if retime:
        return encode(ValidEvent(ev.event_type, ev.user_id, ev.item_id, time.time(), ev.session_id))
    if rec.ts is None:  # no timestamp in the log: the dataflow uses the Kafka record time
        return msgspec.json.encode(
            Event(ev.event_type, ev.user_id, ev.item_id, None, ev.session_id)
        )
    return encode(ev)


def replay(
    records: Iterable[Record],
    settings: Settings,
    options: ReplayOptions,
    producer: Producer,
    on_event: Callable[[], object] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayStats:
    """Send ``records`` to ``settings.kafka.events_topic`` on schedule; invalid ones to the
    dead-letter topic. Returns once Kafka acknowledged (or refused) everything."""
    stats = ReplayStats()
    o = options

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            stats.failed += 1

    def produce(
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        _produce(producer, topic, key, value, delivered, headers)

    def wanted() -> Iterator[LogEvent]:
        for rec in records:
            if isinstance(rec, BadLine):
                stats.note_invalid(rec)
                headers = dlq_headers(rec.reason, rec.kind, f"{o.source_name}:{rec.line}")
                produce(settings.kafka.dead_letter_topic, None, rec.raw, headers)
                continue
            ts = rec.ts
            if ts is not None and (
                (o.since is not None and ts < o.since) or (o.until is not None and ts >= o.until)
            ):
                stats.skipped += 1
                continue
            yield rec

    started = clock()
    sent = 0
    for rec, due in zip_paced(wanted(), o.speed, o.rate) if o.limit != 0 else ():
        while (wait := started + due - clock()) > 0:
            producer.poll(min(wait, 0.5))
        produce(settings.kafka.events_topic, rec.event.user_id.encode(), _wire(rec, o.retime))
        sent += 1
        if rec.ts is not None:
            stats.first_ts = rec.ts if stats.first_ts is None else min(stats.first_ts, rec.ts)
            stats.last_ts = rec.ts if stats.last_ts is None else max(stats.last_ts, rec.ts)
        if sent % 1000 == 0:
            producer.poll(0)
        on_event()
        if o.limit is not None and sent >= o.limit:
            break
    stats.failed += producer.flush(60)
    stats.seconds = clock() - started
    stats.sent = sent
    return stats


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    on_delivery: Callable[[KafkaError | None, Message], None],
    headers: list[tuple[str, bytes | None]] | None = None,
) -> None:
    """Queue one message, waiting while librdkafka's local queue is full."""
    while True:
        try:
            # the producer only reads the list (its stubs' element type is wider)
            hdrs = cast(list[tuple[str, str | bytes | None]] | None, headers)
            producer.produce(topic, value, key, headers=hdrs, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: let it drain
            producer.poll(0.05)


def replay_items(
    records: Iterable[ItemLine | BadLine],
    settings: Settings,
    producer: Producer,
    limit: int | None = None,
    on_item: Callable[[], object] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayStats:
    """Send the valid catalogue writes to ``settings.kafka.items_topic`` keyed by item id,
    in file order (so one item's writes stay in order on one partition); invalid lines
    are counted with their reasons and not sent. Returns once Kafka acknowledged (or
    refused) everything."""
    stats = ReplayStats()

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            stats.failed += 1

    started = clock()
    for rec in records:
        if isinstance(rec, BadLine):
            stats.note_invalid(rec)
            continue
        if limit is not None and stats.sent >= limit:
            break
        w = rec.write
        _produce(
            producer, settings.kafka.items_topic, w.item_id.encode(), items.encode(w), delivered
        )
        stats.sent += 1
        if stats.sent % 1000 == 0:
            producer.poll(0)
        on_item()
    stats.failed += producer.flush(60)
    stats.seconds = clock() - started
    return stats


def zip_paced(
    events: Iterator[LogEvent], speed: float, rate: float | None
) -> Iterator[tuple[LogEvent, float]]:
    """Each event with its due time, computed as the events stream by (``pace``)."""
    held: list[LogEvent] = []

    def stamps() -> Iterator[float | None]:
        for ev in events:
            held.append(ev)
            yield ev.ts

    for due in pace(stamps(), speed, rate):
        yield held.pop(), due
