"""`just serve` as a user runs it: a process that stops cleanly and keeps its data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from featurestore import FeatureStore
from infra.broker import free_port
from tests.helpers import publish, wait_for

pytestmark = pytest.mark.integration


def start_service(settings, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RECSYS_STATE_DIR": str(settings.state_dir),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECSYS_KAFKA_EVENTS_TOPIC": settings.kafka.events_topic,
        "RECSYS_KAFKA_DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
        "RECSYS_API_PORT": str(port),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "infra.serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def ready(api: httpx.Client, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, proc.communicate()[0].decode()
    try:
        return api.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_service_stops_cleanly_and_its_state_survives_a_restart(broker, make_settings, sig):
    settings = make_settings(broker)
    store = FeatureStore.open(settings)
    publish(store, n=40, dim=8)
    store.close()
    port = free_port()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
        proc = start_service(settings, port)
        wait_for(lambda: ready(api, proc), timeout=60, interval=0.2)
        api.post("/events", json={"event_type": "view", "user_id": "ann", "item_id": "i3"})
        wait_for(lambda: api.get("/users/ann").status_code == 200)

        proc.send_signal(sig)
        out = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, out
        assert "stopped cleanly" in out

        proc = start_service(settings, port)  # the store lock was released
        try:
            wait_for(lambda: ready(api, proc), timeout=60, interval=0.2)
            user = api.get("/users/ann").json()
            assert user["event_count"] == 1 and user["recent"][0]["item_id"] == "i3"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
