"""Poison messages: whatever a message holds (any bytes, any JSON, nesting past the
recursion limit, an exception nobody foresaw in any step), it is folded or dead-lettered
with a reason and a kind, the partition moves on and the flow never restarts over it;
``POST /events`` answers 4xx, never 5xx, whatever the body."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from datetime import UTC
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataflow.parsing
import dataflow.trends
import dataflow.users
from api.app import create_app
from core.events import InvalidEvent, decode, decode_many, validate
from core.settings import Settings
from dataflow.parsing import Accepted, Parser
from dataflow.runner import DataflowThread
from eventlog.producer import PRODUCER_CONFIG
from featurestore import FeatureStore
from tests.helpers import isolated_settings, publish, wait_for
from tests.test_flow_logic import SETTINGS, T0, TOPIC, ev, message, run

DEEP = b'{"event_type":"view","user_id":"pz","item_id":"1","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
"""The issue's 2 KB event: an ignored extra field nested 1,000 levels deep."""

# --- generators -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
ids = st.one_of(
    st.sampled_from(["ann", "bob", "i1", "i2", "i3", "a b", "%2F", "..."]),
    st.sampled_from([".", "..", "a/b", "", "x" * 257, "a\x00", "\u202e"]),
    st.text(max_size=12),
)
timestamps = st.one_of(
    st.none(),
    st.floats(min_value=T0 - 1e8, max_value=T0),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.floats(allow_nan=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([T0, T0 + 1, 0, -1, 1e12, "2024-11-07T10:00:00Z", "2024-11-07T10:00:00"]),
    st.text(max_size=30),
)
likely_valid = st.fixed_dictionaries(
    {"event_type": st.sampled_from(["view", "purchase"]), "user_id": ids, "item_id": ids},
    optional={
        "timestamp": timestamps,
        "session_id": st.none() | st.text(max_size=10),
        "extra": json_values,
    },
)
events = likely_valid | st.fixed_dictionaries(
    {"event_type": st.sampled_from(["view", "purchase", "fly", ""]) | st.text(max_size=5)},
    optional={
        "user_id": ids | json_values,
        "item_id": ids | json_values,
        "timestamp": timestamps,
        "session_id": st.none() | st.text(max_size=10) | json_values,
        "extra": json_values,
    },
)
bodies = st.one_of(
    likely_valid.map(lambda v: json.dumps(v).encode()),
    likely_valid.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    events.map(lambda v: json.dumps(v).encode()),
    st.lists(events, max_size=3).map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda d: b"[" * d + b"]" * d),
    st.just(DEEP),
    st.just(b""),
)


def contract_accepts(raw: bytes, now: float, fallback: float) -> bool:
    """What the event contract says of ``raw`` on its own (the expected outcome)."""
    s = SETTINGS.fold
    try:
        validate(
            decode(raw),
            s.event_weights,
            now,
            s.max_future_seconds,
            fallback,
            min_ts=s.min_timestamp.timestamp(),
        )
    except InvalidEvent:
        return False
    return len(raw) <= s.max_event_bytes


# --- the contract and the parser ------------------------------------------------------


def test_deep_nesting_is_refused_as_too_deep_not_a_crash():
    for decoder in (decode, decode_many):
        with pytest.raises(InvalidEvent) as e:
            decoder(DEEP)
        assert e.value.kind == "too_deep" and "nested too deeply" in str(e.value)
    (r,) = Parser(SETTINGS).parse_batch([message(DEEP, 7)])
    assert not isinstance(r, Accepted)
    assert (r.kind, r.value, r.offset) == ("too_deep", DEEP, 7)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_the_parser_accepts_or_rejects_any_message_with_a_reason(body: bytes):
    parser = Parser(SETTINGS)
    msg = message(body, 3)
    (out,) = parser.parse_batch([msg])
    assert isinstance(out, Accepted) == contract_accepts(body, time.time(), T0 + 0.003)
    if isinstance(out, Accepted):
        assert out.offset == 3
    else:
        assert out.reason and out.kind and out.kind != "internal_error", out.reason
        assert out.value == body and out.offset == 3
        headers = dict(out.to_sink().headers)
        assert headers["dlq.kind"] == out.kind.encode() and headers["dlq.reason"]


@settings(max_examples=300, deadline=None)
@given(body=bodies)
def test_decode_many_raises_only_invalid_event(body: bytes):
    try:
        decode_many(body)
    except InvalidEvent as e:
        assert e.kind in {"malformed_json", "invalid_field", "too_deep"}


def test_the_dead_letter_keeps_the_producers_headers():
    raw = b"{not json"
    msg = Message(
        topic=TOPIC,
        partition=1,
        offset=4,
        key=b"k",
        value=raw,
        headers=[("traceparent", b"00-abc-01"), ("origin", b"shop"), ("empty", None)],
        timestamp=(1, int(T0 * 1000)),
    )
    (r,) = Parser(SETTINGS).parse_batch([msg])
    headers = r.to_sink().headers
    assert headers[:3] == [("traceparent", b"00-abc-01"), ("origin", b"shop"), ("empty", None)]
    names = [k for k, _ in headers]
    assert names[3:] == ["dlq.reason", "dlq.kind", "dlq.source", "dlq.time"]


# --- the flow: every message folded or dead-lettered ------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bodies | events.map(lambda e: json.dumps(e).encode()), max_size=25))
def test_every_message_is_folded_or_dead_lettered(bodies_: list[bytes]):
    msgs = [message(b, k, partition=k % 2) for k, b in enumerate(bodies_)]
    out = run(msgs)
    folded = sum(s.event_count for s in _last_states(out.users).values())
    assert folded + len(out.dead) == len(msgs)
    for d in out.dead:
        headers = dict(d.headers)
        assert headers["dlq.reason"] and headers["dlq.kind"] != b"internal_error"
    assert sorted(d.value for d in out.dead) == sorted(
        b for b in bodies_ if not contract_accepts(b, time.time(), T0)
    )


def _last_states(pairs):
    return {u: s for u, s in pairs}


def test_an_unexpected_exception_in_the_parser_dead_letters_that_message(monkeypatch):
    real = dataflow.parsing.validate

    def flaky(event, *args, **kwargs):
        if event.user_id == "bad":
            raise KeyError("surprise")
        return real(event, *args, **kwargs)

    monkeypatch.setattr(dataflow.parsing, "validate", flaky)
    msgs = [message(ev(u, "i1", T0 + k), k) for k, u in enumerate(["ann", "bad", "ann"])]
    out = run(msgs)
    (dead,) = out.dead
    headers = dict(dead.headers)
    assert headers["dlq.kind"] == b"internal_error"
    assert b"KeyError" in headers["dlq.reason"] and b"surprise" in headers["dlq.reason"]
    assert headers["dlq.source"] == f"{TOPIC}:0:1".encode()
    assert out.user("ann").event_count == 2


def test_an_unexpected_exception_while_folding_dead_letters_that_event(monkeypatch, caplog):
    real = dataflow.users.fold_events

    def flaky(state, events, *args, **kwargs):
        if any(e.item_id == "i3" for e in events):
            raise ZeroDivisionError("fold bug")
        return real(state, events, *args, **kwargs)

    monkeypatch.setattr(dataflow.users, "fold_events", flaky)
    # ann's batch holds the failing event in the middle; bob is untouched.
    msgs = [message(ev("ann", f"i{k}", T0 + k), k) for k in range(1, 6)]
    msgs.append(message(ev("bob", "i3", T0), 0, partition=1))
    with caplog.at_level(logging.ERROR, logger="dataflow.shards"):
        out = run(msgs)
    dead = sorted(out.dead, key=lambda d: dict(d.headers)["dlq.source"])
    assert [dict(d.headers)["dlq.source"] for d in dead] == [b"events:0:3", b"events:1:0"]
    for d in dead:
        headers = dict(d.headers)
        assert (
            headers["dlq.kind"] == b"internal_error"
            and b"ZeroDivisionError" in (headers["dlq.reason"])
        )
        assert msgspec.json.decode(d.value)["item_id"] == "i3"  # the event, replayable
    ann = out.user("ann")
    assert ann.event_count == 4 and [r.item_id for r in ann.recent] == ["i1", "i2", "i4", "i5"]
    assert ann.offsets == {0: 5}
    assert "folding events:0:3 failed" in caplog.text
    assert out.trend("i3").offsets == {0: 3, 1: 0}  # the other step counted it


def test_an_unexpected_exception_in_the_trend_count_dead_letters_that_event(monkeypatch):
    real = dataflow.trends.decayed_add

    def flaky(value, ref, w, ts, half_life):
        if ts == T0 + 2:
            raise ValueError("trend bug")
        return real(value, ref, w, ts, half_life)

    monkeypatch.setattr(dataflow.trends, "decayed_add", flaky)
    out = run([message(ev("ann", "i1", T0 + k), k) for k in range(4)])
    (dead,) = out.dead
    assert dict(dead.headers)["dlq.kind"] == b"internal_error"
    assert b"TrendFolder" in dict(dead.headers)["dlq.reason"]
    assert out.user("ann").event_count == 4
    assert out.trend("i1").offsets == {0: 3}


# --- the API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(broker, tmp_path_factory):
    cfg = isolated_settings(
        tmp_path_factory.mktemp("poison-api") / "var", broker, inprocess=False, access_log="off"
    )
    store = FeatureStore.open(cfg)
    publish(store, n=20, dim=8)
    store.close()
    with TestClient(create_app(cfg), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.integration
def test_post_events_answers_422_to_the_deep_event(api):
    r = api.post("/events", content=DEEP, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "nested too deeply" in r.json()["detail"][0]["error"]
    deep_list = b"[" * 100_000 + b"]" * 100_000
    assert api.post("/events", content=deep_list).status_code == 422


@pytest.mark.integration
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_post_events_never_answers_5xx(api, body: bytes):
    r = api.post("/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text)
    assert r.status_code in (202, 413, 422)


# --- through the real broker ------------------------------------------------------------


@pytest.mark.integration
@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        bodies | events.map(lambda e: json.dumps(e).encode()) | st.just(DEEP),
        min_size=30,
        max_size=60,
    )
)
def test_every_message_through_the_broker_is_folded_or_dead_lettered(
    broker, tmp_path: Path, caplog, bodies_: list[bytes]
):
    """Each example on fresh topics and store: produce, run the flow to the end of the
    topic once (no restart), then each message is in a user's count or in the DLQ."""
    cfg = isolated_settings(
        tmp_path / uuid.uuid4().hex, broker, exit_at_end=True, recovery={"enabled": False}
    )
    valid_body = json.dumps(ev("carrier", "i1", T0)).encode()
    bodies_ = [*bodies_, valid_body]  # the last message: a valid one behind the poison
    keys = [b"k%d" % (k % 5) for k in range(len(bodies_))]
    _produce(cfg, keys, bodies_)
    store = FeatureStore.open(cfg)
    publish(store, n=10)
    try:
        with caplog.at_level(logging.ERROR, logger="dataflow.runner"):
            flow = DataflowThread(cfg, store, store.catalog_provider()).start()
            assert flow.join(120), "the flow did not reach the end of the topic"
        assert "dataflow failed" not in caplog.text
        expected_dead = [b for b in bodies_ if not _accepted_live(cfg, b)]
        dead = _read_all(cfg, cfg.kafka.dead_letter_topic, len(expected_dead))
        assert sorted(m.value() or b"" for m in dead) == sorted(expected_dead)
        for m in dead:
            h = dict(m.headers())
            assert h["dlq.reason"] and h["dlq.kind"] not in (None, b"internal_error")
        users = Counter(decode(b).user_id for b in bodies_ if _accepted_live(cfg, b))
        for user, n in users.items():
            state = store.read_user_state(user)
            assert state is not None and state.event_count == n, user
        assert store.read_user_state("carrier").event_count == 1
    finally:
        store.close()


def _accepted_live(cfg: Settings, raw: bytes) -> bool:
    """The contract's verdict for a message read now (Kafka time as the fallback)."""
    s = cfg.fold
    try:
        validate(
            decode(raw),
            s.event_weights,
            time.time(),
            s.max_future_seconds,
            T0,
            min_ts=s.min_timestamp.timestamp(),
        )
    except InvalidEvent:
        return False
    return len(raw) <= s.max_event_bytes


def _produce(cfg: Settings, keys: list[bytes], values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, **PRODUCER_CONFIG})
    for k, v in zip(keys, values, strict=True):
        p.produce(cfg.kafka.events_topic, key=k, value=v, headers=[("origin", b"test")])
    assert p.flush(10) == 0


def _read_all(cfg: Settings, topic: str, n: int) -> list:
    c = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(cfg.kafka.topic_partitions)])
    got: list = []
    try:
        wait_for(
            lambda: got.extend(m for m in c.consume(100, 0.2) if not m.error()) or len(got) >= n,
            30,
        )
        got.extend(m for m in c.consume(100, 1.0) if not m.error())  # and nothing more
    finally:
        c.close()
    return got
