"""Health that tells the truth: /readyz names the check that fails (a stuck dataflow, a
store that cannot be read), consumer lag keeps counting while the flow is stuck, /healthz
stays a plain liveness answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from core.settings import Settings
from core.state import UserState
from dataflow.source import SourceProgress
from eventlog.health import KafkaView
from eventlog.producer import PRODUCER_CONFIG
from featurestore import FeatureStore
from featurestore.backend import StoreError
from infra.serve import build_app
from tests.helpers import isolated_settings, publish, wait_for


def lag(topic: str, partition: int) -> float | None:
    labels = {"topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value("recsys_consumer_lag_messages", labels)


def test_lag_is_end_offset_minus_position_and_a_partition_that_does_not_move_is_stalled(tmp_path):
    settings = isolated_settings(tmp_path / "var", stall_seconds=0.2, events_topic="lag-unit")
    progress = SourceProgress(settings)
    progress.positions[0] = 4  # partition 1 not read yet: from its start (earliest)
    view = KafkaView(True, topic_exists=True, ends={0: 10, 1: 5, 2: 3}, starts={0: 0, 1: 0, 2: 3})
    progress.observe(view)
    assert progress.lag == {0: 6, 1: 5, 2: 0}
    assert (lag("lag-unit", 0), lag("lag-unit", 1), lag("lag-unit", 2)) == (6, 5, 0)
    assert progress.stall() is None  # not stuck for stall_seconds yet
    time.sleep(0.25)
    progress.observe(view)
    assert set(progress.stalled) == {0, 1}
    assert "event(s) wait on partition" in (progress.stall() or "")

    progress.positions[0] = 7  # partition 0 moved: it is not stalled, only behind
    progress.observe(view)
    assert set(progress.stalled) == {1} and progress.lag[0] == 3
    assert progress.stall() == (
        "stalled: 5 event(s) wait on partition 1 of lag-unit and the flow has not moved "
        f"there for {progress.stalled[1][1]:.0f}s"
    )
    progress.positions[1] = 5  # caught up: nothing waits
    progress.observe(view)
    assert progress.stall() is None and progress.lag[1] == 0

    latest = SourceProgress(settings.with_values(start_offset="latest"))
    latest.observe(view)  # a partition not read yet starts at its end: nothing waits
    assert latest.lag == {0: 0, 1: 0, 2: 0}


class StuckStore(FeatureStore):
    """The real store; while ``hang`` is set its user-state writes block until ``release``
    (a store that stopped answering), and while ``reads_fail`` is set reads fail."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(FeatureStore.open(settings).backend)
        self.hang = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.reads_fail = False

    def write_user_states(self, states: Sequence[UserState]) -> None:
        if self.hang.is_set():
            self.entered.set()
            self.release.wait(120)
        super().write_user_states(states)

    def active_version(self) -> str | None:
        if self.reads_fail:
            raise StoreError("connection refused (injected)")
        return super().active_version()


def produce_one_by_one(settings: Settings, events: Sequence[dict]) -> None:
    """Each event its own request (and record batch), so the broker's end offsets are exact."""
    p = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 0, **PRODUCER_CONFIG}
    )
    for e in events:
        p.produce(settings.kafka.events_topic, json.dumps(e).encode(), e["user_id"].encode())
        assert p.flush(10) == 0


def view(user: str, k: int) -> dict:
    return {"event_type": "view", "user_id": user, "item_id": f"i{k}"}


def count(client: TestClient, user: str) -> int:
    r = client.get(f"/users/{user}")
    return r.json()["event_count"] if r.status_code == 200 else 0


@pytest.mark.integration
def test_readyz_says_the_dataflow_is_stalled_while_events_wait_and_lag_keeps_counting(
    broker, make_settings
):
    settings = make_settings(broker)
    topic, partitions = settings.kafka.events_topic, settings.kafka.topic_partitions
    store = StuckStore(settings)
    publish(store, n=40, dim=8)
    try:
        with TestClient(build_app(settings, store=store)) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30)
            store.hang.set()
            produce_one_by_one(settings, [view("sam", 0)])
            assert store.entered.wait(10)  # the flow took the event; its write hangs
            t0 = time.monotonic()
            produce_one_by_one(settings, [view("sam", k) for k in range(1, 6)])
            wait_for(lambda: client.get("/readyz").status_code == 503, timeout=5, interval=0.1)
            assert time.monotonic() - t0 < 5.5
            body = client.get("/readyz").json()
            assert body["status"] == "not ready" and body["failed"] == ["dataflow"]
            assert body["checks"]["dataflow"].startswith("stalled: 6 event(s) wait on partition")
            assert body["checks"]["kafka"] == body["checks"]["store"] == "ok"
            assert client.get("/healthz").json() == {"status": "ok", "checks": {}, "failed": []}
            # end offset - position: the 5 waiting and the one being written
            lags = wait_for(
                lambda: (ls := [lag(topic, p) for p in range(partitions)]) and 6 in ls and ls
            )
            assert sorted(lags) == [0] * (partitions - 1) + [6]
            time.sleep(1.5)  # still stuck, still counted
            assert sorted(lag(topic, p) for p in range(partitions))[-1] == 6

            store.release.set()
            wait_for(lambda: count(client, "sam") == 6, timeout=10)
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10)
            wait_for(lambda: all(lag(topic, p) == 0 for p in range(partitions)), timeout=5)
    finally:
        store.release.set()
        store.close()


@pytest.mark.integration
def test_readyz_says_the_store_cannot_be_read(broker, make_settings):
    settings = make_settings(broker)
    store = StuckStore(settings)
    publish(store, n=40, dim=8)
    try:
        with TestClient(build_app(settings, store=store)) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30)
            store.reads_fail = True
            r = client.get("/readyz")
            assert r.status_code == 503 and r.json()["failed"] == ["store"]
            assert r.json()["checks"]["store"] == (
                "cannot read the feature store: connection refused (injected)"
            )
            assert client.get("/healthz").status_code == 200
            store.reads_fail = False
            assert client.get("/readyz").status_code == 200
    finally:
        store.close()
