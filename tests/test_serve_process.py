"""`just serve` as a user runs it: a process that stops cleanly and keeps its data."""

from __future__ import annotations

import signal

import httpx
import pytest

from featurestore import FeatureStore
from infra.broker import free_port
from infra.process import ServeProcess, ServiceNotReady
from tests.helpers import publish, wait_for

pytestmark = pytest.mark.integration


def service(settings, port: int, log) -> ServeProcess:
    env = {
        "RECSYS_STATE_DIR": str(settings.state_dir),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECSYS_KAFKA_EVENTS_TOPIC": settings.kafka.events_topic,
        "RECSYS_KAFKA_DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
    }
    return ServeProcess(env, log, port=port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_service_stops_cleanly_and_its_state_survives_a_restart(
    broker, make_settings, tmp_path, sig
):
    settings = make_settings(broker)
    store = FeatureStore.open(settings)
    publish(store, n=40, dim=8)
    store.close()
    port = free_port()
    with service(settings, port, tmp_path / "serve-1.log") as server:
        with httpx.Client(base_url=server.url, timeout=5) as api:
            api.post("/events", json={"event_type": "view", "user_id": "ann", "item_id": "i3"})
            wait_for(lambda: api.get("/users/ann").status_code == 200)

        code = server.stop(sig, timeout=30)
        out = server.log_text()
        assert code == 0, out
        assert "stopped cleanly" in out

    # the store lock was released
    with service(settings, port, tmp_path / "serve-2.log") as server:
        user = httpx.get(f"{server.url}/users/ann", timeout=5).json()
        assert user["event_count"] == 1 and user["recent"][0]["item_id"] == "i3"


def test_a_service_that_cannot_start_fails_with_the_end_of_its_log(tmp_path):
    env = {"RECSYS_STATE_DIR": str(tmp_path / "var"), "RECSYS_FOLD_HALF_LIFE_SECONDS": "soon"}
    server = ServeProcess(env, tmp_path / "serve.log", ready_timeout=60)
    with pytest.raises(ServiceNotReady, match="exited with code 1 before it was ready") as e:
        with server:
            pass
    assert str(tmp_path / "serve.log") in str(e.value)
    assert "half_life_seconds" in str(e.value)  # the settings error, from the log's tail
    assert server.returncode == 1
