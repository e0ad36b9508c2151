"""`recsys replay` from the operator's side: choose the source, check it, show progress,
print the summary; ``--items`` for a file of catalogue writes. The sending and pacing
live in ``infra.replay``."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from core.progress import Progress
from core.settings import Settings, get_settings
from eventlog.admin import broker_answers, ensure_topics
from eventlog.producer import close_producer
from infra.cli.remote import CliError
from infra.replay import (
    BadLine,
    Record,
    ReplayOptions,
    ReplayStats,
    count_lines,
    movielens_events,
    producer_for,
    read_item_writes,
    read_jsonl,
    replay,
    replay_items,
)
from training.data import DataError, parse_time


@dataclass(frozen=True)
class Request:
    log: Path | None
    movielens: bool = False
    data_dir: Path | None = None
    speed: float = 1.0
    rate: float | None = None
    retime: bool = False
    limit: int | None = None
    since: str | None = None
    until: str | None = None
    strict: bool = False
    dry_run: bool = False
    bootstrap_servers: str | None = None
    topic: str | None = None
    dead_letter_topic: str | None = None
    quiet: bool = False
    items: Path | None = None
    """A file of catalogue writes for the items topic, instead of an event log."""


def effective_settings(req: Request, base: Settings | None = None) -> Settings:
    base = base or get_settings()
    update = {
        k: v
        for k, v in {
            "bootstrap_servers": req.bootstrap_servers,
            "items_topic" if req.items else "events_topic": req.topic,
            "dead_letter_topic": req.dead_letter_topic,
        }.items()
        if v
    }
    return base.with_values(**update)


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as e:
        raise CliError(f"--{name}: {e}") from None


def source(req: Request, settings: Settings) -> tuple[str, int, Iterator[Record]]:
    """(name for dlq.source, records for the progress bar, records)."""
    if req.movielens == (req.log is not None):
        raise CliError("give a JSON-lines log file or --movielens (one of them)")
    if req.movielens:
        data_dir = req.data_dir or settings.data_dir
        try:
            total, records = movielens_events(data_dir)
        except (FileNotFoundError, DataError) as e:
            raise CliError(str(e)) from None
        return f"movielens:{data_dir}", total, records
    assert req.log is not None
    if not req.log.is_file():
        raise CliError(f"event log {req.log} does not exist")
    future = math.inf if req.retime else settings.fold.max_future_seconds
    oldest = -math.inf if req.retime else settings.fold.min_timestamp.timestamp()
    return (
        str(req.log),
        count_lines(req.log),
        read_jsonl(req.log, settings.fold.event_weights, future, oldest),
    )


def describe_invalid(examples: list[BadLine], total: int) -> str:
    lines = [f"{total} invalid line(s); first ones:"]
    lines += [f"  line {b.line}: {b.reason}" for b in examples]
    return "\n".join(lines)


def check_all(req: Request, settings: Settings) -> ReplayStats:
    """Validate every record without sending (--strict's first pass, --dry-run)."""
    stats = ReplayStats()
    _, _, records = source(req, settings)
    for rec in records:
        if isinstance(rec, BadLine):
            stats.note_invalid(rec)
        else:
            stats.sent += 1
    return stats


def run(req: Request, out: TextIO | None = None) -> ReplayStats:
    out = out or sys.stdout
    settings = effective_settings(req)
    if req.items is not None:
        return run_items(req, settings, out)
    if req.strict or req.dry_run:
        checked = check_all(req, settings)
        if _checked_first(req, checked, "event(s)", out):
            return checked

    name, total, records = source(req, settings)
    since, until = _time(req.since, "since"), _time(req.until, "until")
    _ensure_topics(settings, [settings.kafka.events_topic, settings.kafka.dead_letter_topic])
    options = ReplayOptions(
        speed=req.speed,
        rate=req.rate,
        retime=req.retime,
        limit=req.limit,
        since=since,
        until=until,
        source_name=name,
    )
    producer = producer_for(settings)
    bar_total = min(total, req.limit) if req.limit is not None else total
    try:
        with Progress(bar_total, "replay", "ev", quiet=req.quiet) as bar:
            stats = replay(records, settings, options, producer, on_event=lambda: bar.update())
    finally:
        close_producer(producer, 0)  # replay flushed; give up what is left and disconnect
    print(summary(stats, settings), file=out)
    if stats.failed:
        raise CliError(f"Kafka did not acknowledge {stats.failed} record(s) within 60 s")
    return stats


def _ensure_topics(settings: Settings, topics: list[str]) -> None:
    bootstrap = settings.kafka.bootstrap_servers
    if not broker_answers(bootstrap, timeout=5):
        raise CliError(
            f"no Kafka broker answers at {bootstrap} (--bootstrap-servers or "
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS)"
        )
    ensure_topics(bootstrap, dict.fromkeys(topics, settings.kafka.topic_partitions))


EVENT_ONLY = {
    "movielens": "--movielens",
    "log": "an event log",
    "retime": "--retime",
    "since": "--since",
    "until": "--until",
    "rate": "--rate",
    "dead_letter_topic": "--dead-letter-topic",
}
"""Options of an event replay that mean nothing for a file of catalogue writes."""


def run_items(req: Request, settings: Settings, out: TextIO) -> ReplayStats:
    """`recsys replay --items FILE`: every line checked with the items contract; the valid
    ones sent to the items topic in file order (``--strict``: none if a line is invalid;
    ``--dry-run``: none at all); the invalid ones reported with their line and reason."""
    assert req.items is not None
    given = [flag for name, flag in EVENT_ONLY.items() if getattr(req, name)]
    if given:
        raise CliError(f"--items replays catalogue writes; {', '.join(given)} does not apply")
    if not req.items.is_file():
        raise CliError(f"item file {req.items} does not exist")
    if req.strict or req.dry_run:
        checked = ReplayStats()
        for rec in read_item_writes(req.items):
            if isinstance(rec, BadLine):
                checked.note_invalid(rec)
            else:
                checked.sent += 1
        if _checked_first(req, checked, "item write(s)", out):
            return checked
    _ensure_topics(settings, [settings.kafka.items_topic])
    producer = producer_for(settings)
    total = count_lines(req.items) if req.limit is None else req.limit
    try:
        with Progress(total, "replay", "items", quiet=req.quiet) as bar:
            records = read_item_writes(req.items)
            stats = replay_items(records, settings, producer, req.limit, lambda: bar.update())
    finally:
        close_producer(producer, 0)
    print(items_summary(stats, settings), file=out)
    if stats.failed:
        raise CliError(f"Kafka did not acknowledge {stats.failed} record(s) within 60 s")
    return stats


def items_summary(stats: ReplayStats, settings: Settings) -> str:
    lines = [
        f"sent {stats.sent} item write(s) to {settings.kafka.items_topic} in {stats.seconds:.1f} s"
    ]
    if stats.invalid:
        lines.append("not sent: " + describe_invalid(stats.examples, stats.invalid))
    return "\n".join(lines)


def summary(stats: ReplayStats, settings: Settings) -> str:
    def when(ts: float | None) -> str:
        return datetime.fromtimestamp(ts, tz=UTC).isoformat() if ts is not None else "-"

    lines = [
        f"sent {stats.sent} event(s) to {settings.kafka.events_topic} in {stats.seconds:.1f} s "
        f"({stats.rate:,.0f} events/s); log time {when(stats.first_ts)} .. {when(stats.last_ts)}"
    ]
    if stats.skipped:
        lines.append(f"skipped {stats.skipped} event(s) outside --since/--until")
    if stats.invalid:
        lines.append(
            f"dead-lettered to {settings.kafka.dead_letter_topic}: "
            + describe_invalid(stats.examples, stats.invalid)
        )
    return "\n".join(lines)


def _checked_first(req: Request, checked: ReplayStats, what: str, out: TextIO) -> bool:
    """After checking every line first: with --dry-run, say what would be sent (True: stop
    here); with --strict, refuse the whole file if any line is invalid."""
    if req.dry_run:
        print(f"{checked.sent} valid {what}; nothing sent (--dry-run)", file=out)
        if checked.invalid:
            print(describe_invalid(checked.examples, checked.invalid), file=out)
        return True
    if checked.invalid:
        raise CliError(
            "--strict: nothing sent. " + describe_invalid(checked.examples, checked.invalid)
        )
    return False
