"""The service tells the truth while Kafka is away, and recovers when it is back."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

import dataflow.runner
import eventlog.producer
from core.events import ValidEvent
from eventlog.admin import ensure_app_topics
from featurestore import FeatureStore
from infra.broker import DevBroker, free_port
from infra.serve import build_app
from tests.helpers import publish, wait_for

pytestmark = pytest.mark.integration


def test_kafka_down_then_back(make_settings, monkeypatch):
    monkeypatch.setattr(dataflow.runner, "BROKER_WAIT_SECONDS", 0.5)
    monkeypatch.setattr(dataflow.runner, "RESTART_MAX_SECONDS", 1.0)
    monkeypatch.setattr(eventlog.producer, "CONNECT_TIMEOUT_SECONDS", 1.0)
    port = free_port()
    settings = make_settings(bootstrap_servers=f"127.0.0.1:{port}")
    store = FeatureStore.open(settings)
    publish(store, n=40, dim=8)
    store.close()

    with TestClient(build_app(settings)) as client:
        ready = wait_for(
            lambda: "failed" in (r := client.get("/readyz")).json()["checks"]["dataflow"] and r
        )
        assert ready.status_code == 503
        assert f"no Kafka broker answered at 127.0.0.1:{port}" in ready.json()["checks"]["dataflow"]

        r = client.post("/events", json={"event_type": "view", "user_id": "zoe", "item_id": "i1"})
        assert r.status_code == 503 and "cannot reach Kafka" in r.json()["detail"]

        with DevBroker(port):
            ensure_app_topics(settings)
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=20)
            r = client.post(
                "/events", json={"event_type": "view", "user_id": "zoe", "item_id": "i1"}
            )
            assert r.status_code == 202
            wait_for(lambda: client.get("/users/zoe").status_code == 200, timeout=5)


def test_events_are_accepted_again_after_the_broker_forgot_the_producer(make_settings):
    """The in-memory dev broker restarted: it no longer knows the idempotent producer's id,
    so that producer could never deliver again. The request that finds out gets 503 (within
    the send timeout); the next one goes through on a new producer."""
    port = free_port()
    settings = make_settings(bootstrap_servers=f"127.0.0.1:{port}")
    producer = eventlog.producer.EventProducer(settings)
    event = ValidEvent("view", "zoe", "i1", time.time(), None)
    try:
        with DevBroker(port):
            ensure_app_topics(settings)
            producer.send([event])
        with DevBroker(port):
            ensure_app_topics(settings)
            failures = 0
            while True:
                try:
                    producer.send([event])
                    break
                except eventlog.producer.ProducerUnavailable:
                    failures += 1
                    assert failures <= 1
    finally:
        producer.close()
