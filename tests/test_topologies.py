"""The two ways to run the product.

Production: the dataflow and the API are separate, sharing a Qdrant server. No Qdrant
server runs here, so the server adapter runs on qdrant-client's in-memory mode, shared
by a dataflow thread and an API that does not host one.

Standalone dataflow: `python -m bytewax.run "dataflow.flow:get_flow()"` as its own
process, here on the embedded store (the production command with RECSYS_QDRANT_URL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from api.app import create_app
from dataflow.runner import DataflowThread
from eventlog.producer import PRODUCER_CONFIG
from featurestore import FeatureStore
from featurestore.server import ServerBackend
from tests.helpers import publish, wait_for

pytestmark = pytest.mark.integration


def test_api_and_dataflow_apart_on_the_server_adapter(broker, make_settings):
    settings = make_settings(broker, url="http://qdrant.invalid:6333")
    assert settings.dataflow.inprocess is False
    store = FeatureStore(ServerBackend(QdrantClient(":memory:")))
    publish(store, n=80, dim=8)
    flow = DataflowThread(settings, store, store.catalog_provider()).start()
    try:
        with TestClient(create_app(settings, store=store)) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200)  # after a probe of Kafka
            checks = client.get("/readyz").json()["checks"]
            assert checks == {"model": "v1", "kafka": "ok", "store": "ok"}
            before = client.get("/recommendations/u2").json()["items"]
            client.post(
                "/events", json={"event_type": "purchase", "user_id": "u2", "item_id": "i9"}
            )
            wait_for(lambda: client.get("/users/u2").json().get("event_count") == 1, timeout=5)
            after = client.get("/recommendations/u2").json()["items"]
            assert after != before and "i9" not in [i["item_id"] for i in after]
    finally:
        flow.stop()


def test_standalone_dataflow_process_writes_the_store(broker, make_settings):
    settings = make_settings(broker)
    store = FeatureStore.open(settings)
    publish(store, n=40, dim=8)
    store.close()
    env = {
        **os.environ,
        "RECSYS_STATE_DIR": str(settings.state_dir),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECSYS_KAFKA_EVENTS_TOPIC": settings.kafka.events_topic,
        "RECSYS_KAFKA_DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "dataflow.flow:get_flow()"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, **PRODUCER_CONFIG})
        for i in range(30):
            e = {
                "event_type": "view",
                "user_id": f"w{i % 3}",
                "item_id": f"i{i}",
                "timestamp": 1e9 + i,
            }
            p.produce(
                settings.kafka.events_topic, key=e["user_id"].encode(), value=json.dumps(e).encode()
            )
        p.flush(10)
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("loaded" in line for line in lines):  # the flow has its model
            line = proc.stdout.readline().decode()
            assert line, f"dataflow exited early: {''.join(lines)}"
            lines.append(line)
        time.sleep(2)  # the process holds the store; we look once it has stopped
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    store = FeatureStore.open(settings)  # the lock is released, the WAL replayed
    try:
        states = store.read_user_states(["w0", "w1", "w2"])
        assert {u: s.event_count for u, s in states.items()} == {"w0": 10, "w1": 10, "w2": 10}, out
    finally:
        store.close()
