"""The service end to end: HTTP -> Kafka (real broker) -> Bytewax -> Qdrant Edge -> HTTP."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from featurestore import FeatureStore
from infra.serve import build_app
from tests.helpers import isolated_settings, publish, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(broker, tmp_path_factory):
    """One running service for the module; tests use distinct user ids."""
    settings = isolated_settings(tmp_path_factory.mktemp("api") / "var", broker)
    store = FeatureStore.open(settings)
    publish(store, n=200, dim=16, n_profiles=20)
    store.close()
    with TestClient(build_app(settings)) as c:
        wait_for(lambda: c.get("/readyz").status_code == 200)
        yield c


def event(user: str, item: str, kind: str = "view", **extra) -> dict:
    return {"event_type": kind, "user_id": user, "item_id": item, **extra}


def test_event_is_folded_within_a_second_and_changes_recommendations(client):
    before = client.get("/recommendations/u3?k=10").json()
    assert before["strategy"] == "personalized" and len(before["items"]) == 10
    target = before["items"][0]["item_id"]

    t0 = time.monotonic()
    r = client.post("/events", json=event("u3", target, "purchase"))
    assert r.status_code == 202 and r.json() == {"accepted": 1}
    features = wait_for(
        lambda: (
            (f := client.get("/users/u3")).status_code == 200
            and f.json()["event_count"] == 1
            and f.json()
        ),
        timeout=1.0,
        interval=0.01,
    )
    assert time.monotonic() - t0 < 1.0
    assert features["recent"][0]["item_id"] == target
    assert features["recent"][0]["event_type"] == "purchase"
    assert features["last_event_time"] is not None

    after = client.get("/recommendations/u3?k=10").json()
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    assert target not in [i["item_id"] for i in after["items"]]  # seen items are filtered
    assert after["realtime_weight"] > 0
    assert all(i["reasons"] for i in after["items"])


def test_unknown_user_gets_cold_start_not_an_error(client):
    r = client.get("/recommendations/never-seen?k=5")
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "cold_start" and len(body["items"]) == 5
    assert client.get("/users/never-seen").status_code == 404
    assert "no events" in client.get("/users/never-seen").json()["detail"]


def test_items_endpoint(client):
    assert client.get("/items/i3").json()["categories"] == ["Sci-Fi"]
    r = client.get("/items/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{oops", "malformed JSON"),
        (b'{"event_type": "view", "user_id": "u1"}', "missing required field `item_id`"),
        (b'{"event_type": "teleport", "user_id": "u1", "item_id": "i1"}', "unknown event_type"),
        (b'{"event_type": "view", "user_id": "", "item_id": "i1"}', "user_id"),
        (
            b'{"event_type": "view", "user_id": "u1", "item_id": "i1", "timestamp": "2999-01-01T00:00:00Z"}',
            "future",
        ),
        (
            b'{"event_type": "view", "user_id": "u1", "item_id": "i1", "timestamp": "2024-01-01T00:00:00"}',
            "timezone",
        ),
        (b"[]", "no events"),
    ],
)
def test_bad_events_get_422_with_reason(client, body, fragment):
    r = client.post("/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert fragment in str(r.json()["detail"])


def test_a_batch_with_one_bad_event_is_rejected_whole(client):
    r = client.post("/events", json=[event("u9", "i1"), event("u9", "i2", "teleport")])
    assert r.status_code == 422
    assert r.json()["detail"] == [{"index": 1, "error": r.json()["detail"][0]["error"]}]
    time.sleep(0.3)
    assert client.get("/users/u9").status_code in (200, 404)
    assert client.get("/users/u9").json().get("event_count", 0) == 0


def test_k_is_validated(client):
    assert client.get("/recommendations/u1?k=0").status_code == 422
    assert client.get("/recommendations/u1?k=100000").status_code == 422


def test_ops_endpoints(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["checks"] == {"model": "v1", "kafka": "ok", "store": "ok", "dataflow": "running"}
    assert ready["status"] == "ready" and ready["failed"] == []
    client.get("/recommendations/u1")
    metrics = client.get("/metrics").text
    assert "recsys_http_request_seconds_bucket" in metrics
    assert "recsys_recommendations_total" in metrics
    schema = client.get("/openapi.json").json()
    assert "Event" in schema["components"]["schemas"]
