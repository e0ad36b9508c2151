"""`recsys replay`: the pacing (pure), the log reader, and replays into the real dev broker
read back from Kafka (count, keys, order per user, dead letters)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from core.events import decode
from core.settings import Settings
from infra.broker import free_port
from infra.cli import app
from infra.cli.system import replay_speed
from infra.replay import BadLine, LogEvent, _wire, pace, read_jsonl, schedule
from tests.helpers import require_movielens

runner = CliRunner()
TYPES = ("view", "click", "purchase", "rating")


# --- pacing -------------------------------------------------------------------------


def test_original_gaps_are_divided_by_speed():
    ts = [1000.0, 1060.0, 1090.0, 4690.0]
    assert schedule(ts, speed=1) == [0.0, 60.0, 90.0, 3690.0]
    assert schedule(ts, speed=60) == [0.0, 1.0, 1.5, 61.5]


def test_speed_zero_sends_everything_at_once():
    assert schedule([5.0, 100.0, 3.0e9], speed=0) == [0.0, 0.0, 0.0]


def test_rate_spaces_events_at_least_one_over_rate_apart():
    assert schedule([0.0, 0.0, 0.0, 10.0], speed=0, rate=4) == [0.0, 0.25, 0.5, 0.75]
    # the log's own gaps win when they are longer than the rate's
    assert schedule([0.0, 10.0, 10.0], speed=1, rate=2) == [0.0, 10.0, 10.5]


def test_an_out_of_order_or_unstamped_event_is_due_with_the_one_before():
    assert schedule([100.0, 160.0, 130.0, None, 220.0], speed=1) == [0, 60, 60, 60, 120]
    assert schedule([None, None, 10.0, 12.0], speed=2) == [0, 0, 0, 1]


def test_pacing_rejects_a_negative_speed_or_rate():
    with pytest.raises(ValueError):
        schedule([1.0], speed=-1)
    with pytest.raises(ValueError):
        list(pace([1.0], speed=1, rate=0))


# --- reading a log --------------------------------------------------------------------


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def ev(user: str, item: str, ts: float | str | None, kind: str = "view", **extra) -> str:
    body = {"event_type": kind, "user_id": user, "item_id": item, **extra}
    if ts is not None:
        body["timestamp"] = ts
    return json.dumps(body)


def test_reader_validates_every_line_with_the_event_contract(tmp_path):
    log = write_log(
        tmp_path / "e.jsonl",
        [
            ev("u1", "i1", "2024-11-07T10:00:00Z"),
            "",
            "{not json",
            ev("u1", "i2", 1730973600.5, kind="like"),
            ev("u2", "i3", None, session_id="s1"),
            ev("u2", "i4", "2024-11-07T10:00:00"),  # no timezone
        ],
    )
    records = list(read_jsonl(log, TYPES))
    assert [type(r).__name__ for r in records] == [
        "LogEvent",
        "BadLine",
        "BadLine",
        "LogEvent",
        "BadLine",
    ]
    first, bad_json, bad_type, unstamped, naive = records
    assert isinstance(first, LogEvent) and first.line == 1 and first.ts == 1730973600.0
    assert (
        isinstance(bad_json, BadLine) and bad_json.line == 3 and bad_json.kind == "malformed_json"
    )
    assert isinstance(bad_type, BadLine) and bad_type.kind == "unknown_event_type"
    assert "like" in bad_type.reason and bad_type.raw.startswith(b"{")
    assert isinstance(unstamped, LogEvent) and unstamped.ts is None and unstamped.line == 5
    assert isinstance(naive, BadLine) and naive.line == 6 and naive.kind == "invalid_timestamp"


def test_an_unstamped_event_goes_out_without_a_timestamp(tmp_path):
    log = write_log(tmp_path / "e.jsonl", [ev("u2", "i3", None, session_id="s1")])
    (rec,) = list(read_jsonl(log, TYPES))
    assert isinstance(rec, LogEvent)
    wire = decode(_wire(rec, retime=False))
    assert wire.timestamp is None and wire.session_id == "s1"  # the dataflow uses record time
    retimed = decode(_wire(rec, retime=True))
    assert abs(retimed.timestamp.timestamp() - time.time()) < 5


# --- into the real broker ---------------------------------------------------------------


def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 15.0) -> list:
    """Every record of ``topic`` (all partitions), in partition order."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "test-replay",
            "enable.auto.commit": "false",
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    got, deadline = [], time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        for m in consumer.consume(500, 0.2):
            assert m.error() is None, m.error()
            got.append(m)
    time.sleep(0.3)  # nothing more should arrive
    got += [m for m in consumer.consume(500, 0.3) if m.error() is None]
    consumer.close()
    return got


def topic_args(s: Settings) -> list[str]:
    return [
        "--bootstrap-servers",
        s.kafka.bootstrap_servers,
        "--topic",
        s.kafka.events_topic,
        "--dead-letter-topic",
        s.kafka.dead_letter_topic,
        "--quiet",
    ]


@pytest.mark.integration
def test_jsonl_replay_keys_by_user_keeps_order_and_dead_letters_bad_lines(
    broker, make_settings, tmp_path
):
    settings = make_settings(broker)
    lines, want = [], defaultdict(list)
    base = 1_700_000_000.0
    for n in range(60):
        user, item = f"u{n % 7}", f"i{n}"
        lines.append(ev(user, item, base + n))
        want[user].append(item)
    lines.insert(10, '{"event_type": "view", "user_id": "u1"}')  # no item_id: line 11
    lines.insert(30, "garbage")  # line 31
    log = write_log(tmp_path / "events.jsonl", lines)

    result = runner.invoke(
        app, ["replay", str(log), "--as-fast-as-possible", *topic_args(settings)]
    )
    assert result.exit_code == 0, result.output
    assert "sent 60 event(s)" in result.output
    assert "line 11:" in result.output and "line 31:" in result.output

    records = read_topic(settings, settings.kafka.events_topic, 60)
    assert len(records) == 60
    got = defaultdict(list)
    for m in records:
        body = msgspec.json.decode(m.value())
        assert m.key().decode() == body["user_id"]
        got[body["user_id"]].append(body["item_id"])
    assert got == want  # per-user order survives (one user, one partition)
    # each user on one partition
    parts = defaultdict(set)
    for m in records:
        parts[m.key()].add(m.partition())
    assert all(len(p) == 1 for p in parts.values())

    dead = read_topic(settings, settings.kafka.dead_letter_topic, 2)
    assert len(dead) == 2
    headers = [dict(m.headers()) for m in dead]
    assert sorted(h["dlq.source"].decode() for h in headers) == [f"{log}:11", f"{log}:31"]
    assert {h["dlq.kind"].decode() for h in headers} == {"invalid_field", "malformed_json"}
    assert sorted(m.value() for m in dead) == sorted([b"garbage", lines[10].encode()])


@pytest.mark.integration
def test_replay_keeps_the_logs_time_gaps_scaled_by_speed(broker, make_settings, tmp_path):
    settings = make_settings(broker)
    log = write_log(
        tmp_path / "e.jsonl",
        [ev("u1", "i1", 1.7e9), ev("u2", "i2", 1.7e9 + 1), ev("u1", "i3", 1.7e9 + 2)],
    )
    t0 = time.monotonic()
    result = runner.invoke(app, ["replay", str(log), "--speed", "2", *topic_args(settings)])
    elapsed = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    assert 1.0 <= elapsed < 5.0  # 2 s of log at speed 2
    records = read_topic(settings, settings.kafka.events_topic, 3)
    stamps = sorted(msgspec.json.decode(m.value())["timestamp"] for m in records)
    assert stamps == ["2023-11-14T22:13:20Z", "2023-11-14T22:13:21Z", "2023-11-14T22:13:22Z"]


@pytest.mark.integration
def test_movielens_slice_replays_as_rating_events_in_time_order(broker, make_settings):
    from training.data import load_movielens, parse_time

    settings = make_settings(broker)
    require_movielens(settings.data_dir)
    result = runner.invoke(
        app,
        [
            "replay",
            "--movielens",
            "--data-dir",
            str(settings.data_dir),
            "--as-fast-as-possible",
            "--limit",
            "300",
            "--since",
            "1997-11-01T00:00:00Z",
            *topic_args(settings),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "sent 300 event(s)" in result.output
    inter, _ = load_movielens(settings.data_dir)
    since = parse_time("1997-11-01T00:00:00Z")
    rows = [
        (u, i, t)
        for u, i, t in zip(inter.user_ids, inter.item_ids, inter.ts, strict=True)
        if t >= since
    ][:300]
    want = defaultdict(list)
    for u, i, t in rows:
        want[u].append((i, t))
    got = defaultdict(list)
    for m in read_topic(settings, settings.kafka.events_topic, 300):
        e = decode(m.value())
        assert e.event_type == "rating" and m.key().decode() == e.user_id
        got[e.user_id].append((e.item_id, e.timestamp.timestamp()))
    assert got == want


@pytest.mark.integration
def test_retime_stamps_events_with_the_time_they_are_sent(broker, make_settings, tmp_path):
    settings = make_settings(broker)
    log = write_log(tmp_path / "e.jsonl", [ev("u1", "i1", 1000.0), ev("u1", "i2", 5000.0)])
    result = runner.invoke(
        app, ["replay", str(log), "--speed", "0", "--retime", *topic_args(settings)]
    )
    assert result.exit_code == 0, result.output
    for m in read_topic(settings, settings.kafka.events_topic, 2):
        assert abs(decode(m.value()).timestamp.timestamp() - time.time()) < 30


@pytest.mark.integration
def test_strict_sends_nothing_when_a_line_is_invalid(broker, make_settings, tmp_path):
    settings = make_settings(broker)
    log = write_log(tmp_path / "e.jsonl", [ev("u1", "i1", 1.7e9), "{", ev("u1", "i2", 1.7e9 + 1)])
    result = runner.invoke(
        app, ["replay", str(log), "--strict", "--speed", "0", *topic_args(settings)]
    )
    assert result.exit_code == 1
    assert "--strict: nothing sent" in result.output and "line 2:" in result.output
    assert read_topic(settings, settings.kafka.events_topic, 1, timeout=1.0) == []


def test_replay_errors_are_one_line_not_a_traceback(tmp_path):
    log = write_log(tmp_path / "e.jsonl", [ev("u1", "i1", 1.7e9)])
    dead = f"127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["replay", str(log), "--bootstrap-servers", dead])
    assert result.exit_code == 1
    assert f"no Kafka broker answers at {dead}" in result.output
    assert "Traceback" not in result.output

    result = runner.invoke(app, ["replay", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["replay"])
    assert result.exit_code == 1 and "--movielens" in result.output
    result = runner.invoke(app, ["replay", str(log), "--speed", "-1"])
    assert result.exit_code == 2


def test_dry_run_reports_invalid_lines_without_kafka(tmp_path):
    log = write_log(
        tmp_path / "e.jsonl",
        [ev("u1", "i1", 1.7e9), "nope", ev("u1", "i2", 1e12), ev("u1", "i3", 0)],
    )
    result = runner.invoke(app, ["replay", str(log), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1 valid event(s); nothing sent" in result.output
    assert "3 invalid line(s)" in result.output
    assert "line 2:" in result.output and "line 3:" in result.output and "future" in result.output
    assert "line 4: timestamp 1970-01-01" in result.output and "oldest accepted" in result.output


def test_rate_alone_paces_by_rate_only():
    assert replay_speed(None, False, None) == 1.0
    assert replay_speed(None, False, 500.0) == 0.0
    assert replay_speed(60.0, False, 500.0) == 60.0
    assert replay_speed(60.0, True, None) == 0.0


# --- catalogue writes (--items) -----------------------------------------------------------


@pytest.mark.integration
def test_items_replay_sends_checked_writes_keyed_by_item_and_reports_bad_lines(
    broker, make_settings, tmp_path
):
    from core import items

    settings = make_settings(broker)
    lines = [
        json.dumps({"op": "upsert", "item_id": "n1", "title": "Heat", "categories": ["Crime"]}),
        json.dumps({"op": "upsert", "item_id": "n2", "description": "no title"}),  # line 2
        "",
        json.dumps({"op": "patch", "item_id": "n1", "available": False}),
        "garbage",  # line 5
        json.dumps({"op": "delete", "item_id": "n1", "title": "x"}),  # line 6: unknown field
        json.dumps({"op": "delete", "item_id": "n3"}),
    ]
    log = write_log(tmp_path / "items.jsonl", lines)
    args = ["replay", "--items", str(log), "--bootstrap-servers", broker, "--quiet"]
    args += ["--topic", settings.kafka.items_topic]

    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "3 valid item write(s); nothing sent" in dry.stdout
    strict = runner.invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1 and "--strict: nothing sent" in strict.output
    assert "line 2:" in strict.output

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"sent 3 item write(s) to {settings.kafka.items_topic}" in result.stdout
    assert "not sent: 3 invalid line(s)" in result.stdout
    assert "line 2: invalid item: Object missing required field `title`" in result.stdout
    assert "line 5: malformed JSON" in result.stdout and "line 6:" in result.stdout

    records = read_topic(settings, settings.kafka.items_topic, 3)
    assert len(records) == 3  # the dry run and the strict run sent nothing
    writes = [(m.key().decode(), items.decode(m.value())) for m in records]
    assert all(key == w.item_id for key, w in writes)
    n1 = [w for key, w in writes if key == "n1"]  # one item's writes in file order
    assert n1 == [
        items.Upsert(item_id="n1", title="Heat", categories=["Crime"]),
        items.Patch(item_id="n1", available=False),
    ]
    assert ("n3", items.Delete(item_id="n3")) in writes
    # nothing went to the dead-letter topic
    assert read_topic(settings, settings.kafka.dead_letter_topic, 0, timeout=0.5) == []

    mixed = runner.invoke(app, [*args, "--retime"])
    assert mixed.exit_code == 1 and "--retime does not apply" in mixed.output
