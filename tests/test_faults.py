"""Faults the service rides out without a restart, against the real dev broker and the real
store: the broker stopped and started again, the broker away at start, store writes that
fail for a while."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import httpx
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from api.app import create_app
from core.settings import Settings
from core.state import UserState
from dataflow.runner import DataflowThread
from eventlog.producer import PRODUCER_CONFIG
from featurestore import FeatureStore
from featurestore.backend import StoreError
from infra.broker import DevBroker, free_port
from infra.process import ServeProcess, serve_in_thread
from infra.serve import build_app
from tests.helpers import publish, wait_for

pytestmark = pytest.mark.integration


def event(user: str, item: str = "i1") -> dict:
    return {"event_type": "view", "user_id": user, "item_id": item}


def produce(settings: Settings, events: Sequence[dict]) -> None:
    """Straight to the events topic, as any producer of the company would."""
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, **PRODUCER_CONFIG})
    for e in events:
        p.produce(settings.kafka.events_topic, json.dumps(e).encode(), e["user_id"].encode())
    assert p.flush(10) == 0


def count(client: TestClient, user: str) -> int:
    r = client.get(f"/users/{user}")
    return r.json()["event_count"] if r.status_code == 200 else 0


def post_until_accepted(client: TestClient, body: dict, within: float) -> float:
    """POST /events until it answers 202; seconds it took. Fails after ``within`` s."""
    t0 = time.monotonic()
    while True:
        r = client.post("/events", json=body)
        if r.status_code == 202:
            return time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert time.monotonic() - t0 < within, f"still {r.status_code} after {within}s: {r.text}"
        time.sleep(0.2)


def not_ready(client: TestClient, check: str, within: float) -> dict:
    """Wait until /readyz answers 503 naming ``check``; its body."""
    t0 = time.monotonic()
    while True:
        r = client.get("/readyz")
        if r.status_code == 503 and check in r.json()["failed"]:
            return r.json()
        assert time.monotonic() - t0 < within, f"/readyz still says {r.json()} after {within}s"
        time.sleep(0.1)


def test_a_broker_restart_is_survived_without_restarting_the_service(make_settings, tmp_path):
    """The dev broker stops and comes back on its port, empty (it keeps topics in memory).
    While it is away /readyz says so and POST /events answers 503 fast; within 10 s of its
    return the API takes events again and the in-process flow reads the new topic, events
    produced straight to Kafka included, with the users' stored features kept."""
    port = free_port()
    broker = DevBroker(port, log_path=tmp_path / "broker.log").start()
    try:
        settings = make_settings(broker.bootstrap)
        store = FeatureStore.open(settings)
        publish(store, n=40, dim=8)
        store.close()
        with TestClient(build_app(settings)) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30)
            assert (
                client.post("/events", json=[event("zoe"), event("zoe", "i2")]).status_code == 202
            )
            wait_for(lambda: count(client, "zoe") == 2, timeout=10)

            broker.stop()
            body = not_ready(client, "kafka", within=5)
            assert f"cannot reach Kafka at 127.0.0.1:{port}" in body["checks"]["kafka"]
            t0 = time.monotonic()
            r = client.post("/events", json=event("zoe"))
            assert r.status_code == 503 and "cannot reach Kafka" in r.json()["detail"]
            assert time.monotonic() - t0 < 5.5
            assert client.get("/healthz").status_code == 200  # liveness is not readiness

            broker.start()
            back = time.monotonic()
            post_until_accepted(client, event("bob"), within=10)
            produce(settings, [event("ann", "i3")])  # not through the API
            # Both within 10 s of the broker's return; a run still reading the new topic
            # at the old positions may fold one before the restarted run folds the other.
            left = lambda: max(0.5, 10 - (time.monotonic() - back))  # noqa: E731
            wait_for(lambda: count(client, "ann") == 1, timeout=left())
            wait_for(lambda: count(client, "bob") >= 1, timeout=left())
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10)
            assert count(client, "zoe") == 2  # stored features outlive the broker's memory
    finally:
        broker.stop()


def test_the_service_starts_with_the_broker_unreachable_and_picks_it_up(make_settings, tmp_path):
    port = free_port()
    settings = make_settings(bootstrap_servers=f"127.0.0.1:{port}")
    store = FeatureStore.open(settings)
    publish(store, n=40, dim=8)
    store.close()
    with TestClient(build_app(settings)) as client:
        not_ready(client, "kafka", within=5)
        body = wait_for(
            lambda: (
                "waiting for Kafka" in (b := client.get("/readyz").json())["checks"]["dataflow"]
                and b
            ),
            timeout=5,
        )
        assert body["failed"] == ["kafka", "dataflow"]
        assert f"cannot reach Kafka at 127.0.0.1:{port}" in body["checks"]["dataflow"]
        t0 = time.monotonic()
        r = client.post("/events", json=event("zoe"))
        assert r.status_code == 503 and "cannot reach Kafka" in r.json()["detail"]
        assert r.headers["retry-after"] == "1" and time.monotonic() - t0 < 5.5

        with DevBroker(port, log_path=tmp_path / "broker.log"):
            back = time.monotonic()
            post_until_accepted(client, event("zoe"), within=10)
            wait_for(lambda: count(client, "zoe") >= 1, timeout=10 - (time.monotonic() - back))
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10)


def test_recsys_serve_starts_with_its_broker_unreachable_and_picks_it_up(make_settings, tmp_path):
    """`python -m infra.serve` (what `recsys serve` runs) with a broker that does not answer
    yet and is not its own to start (127.0.0.2: not the dev broker's loopback address): it
    serves, not ready, and gets ready once the broker is there."""
    port = free_port()
    settings = make_settings(bootstrap_servers=f"127.0.0.2:{port}")
    store = FeatureStore.open(settings)
    publish(store, n=40, dim=8)
    store.close()
    env = {
        "RECSYS_STATE_DIR": str(settings.state_dir),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECSYS_KAFKA_EVENTS_TOPIC": settings.kafka.events_topic,
        "RECSYS_KAFKA_DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
    }
    server = ServeProcess(env, tmp_path / "serve.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as api:

            def readyz() -> httpx.Response | None:
                try:
                    return api.get("/readyz")
                except httpx.TransportError:
                    assert server.proc is not None and server.proc.poll() is None, server.log_text()
                    return None

            def unreachable() -> httpx.Response | None:
                r = readyz()
                return (
                    r if r is not None and "cannot reach" in r.json()["checks"]["kafka"] else None
                )

            r = wait_for(unreachable, timeout=60)
            assert r.status_code == 503 and "kafka" in r.json()["failed"], r.json()
            with DevBroker(port, "127.0.0.2", log_path=tmp_path / "broker.log"):
                back = time.monotonic()
                server.wait_ready(timeout=10)
                assert api.post("/events", json=event("zoe")).status_code == 202
                wait_for(lambda: api.get("/users/zoe").status_code == 200, timeout=10)
                assert time.monotonic() - back < 12
    finally:
        server.stop()


class FlakyStore(FeatureStore):
    """The real store, whose user-state writes fail while ``failing`` is set."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(FeatureStore.open(settings).backend)
        self.failing = threading.Event()
        self.failed = 0

    def write_user_states(self, states: Sequence[UserState]) -> None:
        if self.failing.is_set():
            self.failed += 1
            raise StoreError("disk full (injected)")
        super().write_user_states(states)


def retries() -> float:
    sample = {"collection": "user_state"}
    return REGISTRY.get_sample_value("recsys_store_write_retries_total", sample) or 0.0


def test_store_write_errors_are_retried_with_back_off_and_lose_nothing(broker, make_settings):
    settings = make_settings(broker)
    store = FlakyStore(settings)
    publish(store, n=40, dim=8)
    before = retries()
    try:
        with TestClient(build_app(settings, store=store)) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30)
            store.failing.set()
            assert (
                client.post("/events", json=[event("kim", f"i{k}") for k in range(5)]).status_code
                == 202
            )
            body = not_ready(client, "store", within=5)
            assert "disk full (injected)" in body["checks"]["store"]
            time.sleep(2.0)
            # retried, with back-off: a handful of attempts in two seconds, not thousands
            assert 3 <= store.failed <= 30 and retries() - before == store.failed
            assert count(client, "kim") == 0
            store.failing.clear()
            wait_for(lambda: count(client, "kim") == 5, timeout=10)
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10)
            assert count(client, "kim") == 5
    finally:
        store.close()


def test_a_flow_stopped_while_its_writes_fail_folds_those_events_at_its_next_start(
    broker, make_settings
):
    """Stopping gives up the write being retried; the epoch it belonged to is not
    committed, so the next run folds and writes those events again, once."""
    settings = make_settings(broker)
    store = FlakyStore(settings)
    publish(store, n=40, dim=8)
    try:
        store.failing.set()
        flow = DataflowThread(settings, store, store.catalog_provider()).start()
        produce(settings, [event("lea", f"i{k}") for k in range(3)])
        wait_for(lambda: store.failed >= 2, timeout=20)
        flow.stop()
        assert store.read_user_state("lea") is None
        store.failing.clear()
        flow = DataflowThread(settings, store, store.catalog_provider()).start()
        state = wait_for(lambda: store.read_user_state("lea"), timeout=20)
        time.sleep(1.0)
        flow.stop()
        state = store.read_user_state("lea")
        assert state is not None and state.event_count == 3
    finally:
        store.close()


def test_post_events_answers_503_within_5_seconds_while_the_broker_is_away(make_settings, tmp_path):
    """Through a real HTTP server, as a client sees it, on the API alone."""
    port = free_port()
    broker = DevBroker(port, log_path=tmp_path / "broker.log").start()
    settings = make_settings(broker.bootstrap, inprocess=False, impressions_enabled=False)
    store = FeatureStore.open(settings)
    publish(store, n=40, dim=8)
    try:
        with serve_in_thread(create_app(settings, store=store)) as url:
            with httpx.Client(base_url=url, timeout=30) as api:
                assert api.post("/events", json=event("zoe")).status_code == 202
                broker.stop()
                for _ in range(3):
                    t0 = time.monotonic()
                    r = api.post("/events", json=event("zoe"))
                    assert r.status_code == 503 and time.monotonic() - t0 < 5.5
    finally:
        broker.stop()
        store.close()
