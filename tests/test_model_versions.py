"""A newly trained model is picked up by a running service without a restart."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from featurestore import FeatureStore
from infra.serve import build_app
from tests.helpers import publish, wait_for, write_model_dir

pytestmark = pytest.mark.integration


def test_serving_picks_up_a_new_model_and_moves_users_to_it(broker, make_settings):
    settings = make_settings(broker, model_poll_seconds=0.2)
    store = FeatureStore.open(settings)
    publish(store, "v1", n=60, dim=8)
    store.close()

    with TestClient(build_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        client.post("/events", json={"event_type": "view", "user_id": "u1", "item_id": "i5"})
        wait_for(lambda: client.get("/users/u1").json().get("model_version") == "v1")
        assert client.get("/recommendations/u1").json()["model_version"] == "v1"

        # `just train` while the server holds the embedded store: it only writes the model dir
        version = write_model_dir(settings.model_dir, seed=3)
        wait_for(lambda: client.get("/readyz").json()["checks"]["model"] == version, timeout=10)
        recs = client.get("/recommendations/u1").json()
        assert recs["model_version"] == version and recs["strategy"] == "personalized"

        # the dataflow moves the user into the new item space at their next event
        client.post("/events", json={"event_type": "view", "user_id": "u1", "item_id": "i7"})
        state = wait_for(
            lambda: (u := client.get("/users/u1").json())["event_count"] == 2 and u, timeout=5
        )
        assert state["model_version"] == version


def test_publish_cli_activates_latest_and_rolls_back(make_settings, monkeypatch, capsys):
    from typer.testing import CliRunner

    from core.settings import get_settings
    from featurestore import publish as publish_cli

    def publish(*args: str) -> int:
        return CliRunner().invoke(publish_cli.app, list(args)).exit_code

    settings = make_settings()
    first = write_model_dir(settings.model_dir, seed=1)
    second = write_model_dir(settings.model_dir, seed=2)
    monkeypatch.setenv("RECSYS_STATE_DIR", str(settings.state_dir))
    get_settings.cache_clear()
    try:
        assert publish() == 0  # LATEST
        store = FeatureStore.open(settings)
        assert store.active_version() == second
        store.close()
        assert publish("--version", first) == 0  # roll back
        store = FeatureStore.open(settings)
        assert store.active_version() == first
        assert [m.version for m in store.list_models()] == [first, second]
        # while a server holds the embedded store, training leaves publishing to it
        publish_cli.publish_from_training(settings.model_dir / second, settings)
        assert "held by a running server" in capsys.readouterr().out
        store.close()
    finally:
        get_settings.cache_clear()
