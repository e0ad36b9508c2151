"""A new item reaches recommendations within a second of ``POST /items``, with no
retraining: HTTP -> items topic (real broker) -> dataflow (the text encoder and the
trained model's item tower) -> store -> the API's catalogue -> ``GET /recommendations``.

The model is trained for the test on a MovieLens slice, so the item tower is a real one."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

import encoder
from infra.serve import build_app
from tests.helpers import isolated_settings, publish_slice_model, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("catalog-live")
    settings = isolated_settings(tmp / "var", broker)
    publish_slice_model(tmp, settings)
    with TestClient(build_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30)
        encoder.warm()  # what RECSYS_CATALOG_WARM_ENCODER starts: wait for it to finish
        yield client


TRILOGY = ["50", "181", "172"]
"""Star Wars, Return of the Jedi, The Empire Strikes Back (MovieLens ids)."""


def top10(client: TestClient, user: str) -> list[str]:
    return [i["item_id"] for i in client.get(f"/recommendations/{user}?k=10").json()["items"]]


def test_a_new_item_matching_recent_picks_enters_the_top_10_within_a_second(service):
    client = service
    user = "catalog-live-u1"
    events = [{"event_type": "view", "user_id": user, "item_id": i} for i in TRILOGY]
    assert client.post("/events", json=events).status_code == 202
    wait_for(lambda: client.get(f"/users/{user}").json().get("event_count") == 3, timeout=5)
    jedi = client.get(f"/items/{TRILOGY[1]}").json()
    new = {
        "item_id": "jedi-2",
        "title": f"{jedi['title']} II",
        "description": f"The Star Wars saga goes on after {jedi['title']}.",
        "categories": jedi["categories"],
    }
    assert "jedi-2" not in top10(client, user)

    t0 = time.monotonic()
    assert client.post("/items", json=new).status_code == 202
    wait_for(lambda: "jedi-2" in top10(client, user), timeout=1.0, interval=0.02)
    took = time.monotonic() - t0
    assert took < 1.0, f"{took:.2f}s"
    assert client.get("/items/jedi-2").json()["title"] == new["title"]


def test_an_item_removed_leaves_the_candidates_at_once(service):
    client = service
    user = "catalog-live-u2"
    events = [{"event_type": "view", "user_id": user, "item_id": i} for i in TRILOGY[:2]]
    assert client.post("/events", json=events).status_code == 202
    wait_for(lambda: client.get(f"/users/{user}").json().get("event_count") == 2, timeout=5)
    target = top10(client, user)[0]
    t0 = time.monotonic()
    assert client.delete(f"/items/{target}").status_code == 202
    wait_for(lambda: target not in top10(client, user), timeout=1.0, interval=0.02)
    assert time.monotonic() - t0 < 1.0
    assert client.get(f"/items/{target}").json()["extra"]["available"] is False
