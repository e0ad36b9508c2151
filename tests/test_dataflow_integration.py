"""The dataflow against the real broker and the real Qdrant engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from dataflow.runner import DataflowThread
from eventlog.producer import PRODUCER_CONFIG
from featurestore import FeatureStore
from tests.helpers import publish, wait_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def produce(settings, events: list[dict | bytes]) -> None:
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, **PRODUCER_CONFIG})
    for e in events:
        if isinstance(e, bytes):
            p.produce(settings.kafka.events_topic, key=b"raw", value=e)
        else:
            p.produce(
                settings.kafka.events_topic, key=e["user_id"].encode(), value=json.dumps(e).encode()
            )
    assert p.flush(10) == 0


def ev(user: str, item: str, ts: float, kind: str = "view", **extra) -> dict:
    return {"event_type": kind, "user_id": user, "item_id": item, "timestamp": ts, **extra}


def read_dead_letters(settings, n: int, timeout: float = 10.0) -> list:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "t",
            "enable.auto.commit": False,
        }
    )
    c.assign(
        [
            TopicPartition(settings.kafka.dead_letter_topic, p, 0)
            for p in range(settings.kafka.topic_partitions)
        ]
    )
    got: list = []
    wait_for(
        lambda: got.extend(m for m in c.consume(100, 0.2) if not m.error()) or len(got) >= n,
        timeout,
    )
    c.close()
    return got


@pytest.fixture
def pipeline(broker, make_settings):
    settings = make_settings(broker)
    store = FeatureStore.open(settings)
    _, _, vecs, _ = publish(store)
    flows: list[DataflowThread] = []

    def start() -> DataflowThread:
        t = DataflowThread(settings, store, store.catalog_provider()).start()
        flows.append(t)
        wait_for(t.running.is_set)
        return t

    yield settings, store, vecs, start
    for t in flows:
        t.stop()
    store.close()


def test_events_fold_into_user_state(pipeline):
    settings, store, vecs, start = pipeline
    start()
    later = T0 + settings.fold.half_life_seconds
    produce(
        settings, [ev("alice", "i1", T0), ev("alice", "i3", later, "purchase", session_id="s1")]
    )
    state = wait_for(lambda: (s := store.read_user_state("alice")) and s.event_count == 2 and s)
    w = settings.fold.event_weights
    expected = 0.5 * w["view"] * vecs[1] + w["purchase"] * vecs[3]  # one half-life apart
    np.testing.assert_allclose(state.vector, expected, rtol=1e-5)
    assert state.last_ts == later and state.session_id == "s1"
    assert [r.item_id for r in state.recent] == ["i1", "i3"]
    assert state.categories == pytest.approx({"Sci-Fi": 0.5 * w["view"] + w["purchase"]})
    assert state.model_version == "v1"


def test_bad_messages_go_to_dead_letter_topic_with_reason(pipeline):
    settings, store, _, start = pipeline
    start()
    oversized = json.dumps(ev("bob", "i1", T0, padding="x" * 20_000)).encode()
    future = json.dumps(ev("bob", "i1", 4e9)).encode()
    bad = {
        b"{not json": ("malformed_json", "malformed JSON"),
        json.dumps(ev("bob", "i1", T0, "teleport")).encode(): (
            "unknown_event_type",
            "unknown event_type 'teleport'",
        ),
        json.dumps({"user_id": "bob"}).encode(): ("invalid_field", "missing required field"),
        oversized: ("oversized", "bytes; the limit is 16384"),
        future: ("future_timestamp", "in the future"),
        b"": ("empty", "empty message"),
    }
    produce(settings, list(bad))
    dead = read_dead_letters(settings, len(bad))
    assert len(dead) == len(bad)
    for m in dead:
        headers = {k: v.decode() for k, v in m.headers()}
        kind, reason = bad[m.value() or b""]
        assert headers["dlq.kind"] == kind
        assert reason in headers["dlq.reason"]
        assert headers["dlq.source"].startswith(f"{settings.kafka.events_topic}:")
    assert store.read_user_state("bob") is None


def test_restart_rereads_topic_without_double_counting(pipeline):
    settings, store, _, start = pipeline
    flow = start()
    produce(settings, [ev("carol", f"i{i}", T0 + i) for i in range(5)])
    first = wait_for(lambda: (s := store.read_user_state("carol")) and s.event_count == 5 and s)
    flow.stop()
    start()  # reads the topic again from the beginning
    produce(settings, [ev("carol", "i9", T0 + 10)])
    after = wait_for(lambda: (s := store.read_user_state("carol")) and s.event_count >= 6 and s)
    assert after.event_count == 6
    expected = first.vector * 2.0 ** (-(10 - 4) / settings.fold.half_life_seconds)
    expected = expected + settings.fold.event_weights["view"] * store.load_catalog("v1").vector(
        "i9"
    )
    np.testing.assert_allclose(after.vector, expected, rtol=1e-5)


def test_unknown_items_are_kept_and_counted(pipeline):
    settings, store, _, start = pipeline
    start()
    produce(settings, [ev("dave", "not-in-catalogue", T0), ev("dave", "i1", T0 + 1)])
    s = wait_for(lambda: (s := store.read_user_state("dave")) and s.event_count == 2 and s)
    assert s.unknown_items == 1
    assert [r.item_id for r in s.recent] == ["not-in-catalogue", "i1"]
