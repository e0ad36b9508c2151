"""`exclude_seen` holds for everything a user interacted with, not just their last items:
events go through the API, the real broker and the in-process dataflow into the user's
state (as catalogue rows), and no recommendation brings one of them back, through either
ANN path and across a model switch."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from featurestore import FeatureStore
from infra.serve import build_app
from tests.helpers import isolated_settings, make_model, wait_for

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "admin"}
N_ITEMS = 160
SEEN = [f"i{k}" for k in range(0, 2 * 70, 2)]  # 70 items, far more than the 20 recent


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def _state(store: FeatureStore, user: str):
    return store.read_user_state(user)


@pytest.fixture
def app(broker, tmp_path):
    settings = isolated_settings(tmp_path / "var", broker, admin_keys={"admin"})
    store = FeatureStore.open(settings)
    record, items, vecs, profiles = make_model("v1", n=N_ITEMS, dim=16)
    store.publish_model(record, items, vecs, profiles)
    store.activate("v1")
    with TestClient(build_app(settings, store=store)) as c:
        wait_for(lambda: c.get("/readyz").status_code == 200)
        yield c, store
    store.close()


def test_every_item_a_user_interacted_with_stays_out_across_a_model_switch(app):
    c, store = app
    t0 = time.time() - 600
    events = [
        {"event_type": "view", "user_id": "heavy", "item_id": item, "timestamp": t0 + k}
        for k, item in enumerate(SEEN)
    ]
    events.append({"event_type": "view", "user_id": "heavy", "item_id": "gone", "timestamp": t0})
    assert c.post("/events", json=events, headers=ADMIN).status_code == 202
    state = wait_for(lambda: (s := _state(store, "heavy")) and s.event_count == 71 and s, 30)
    assert len(state.recent) == 20  # the recent items alone would leave 50 seen ones in
    assert sorted(state.seen_rows) == sorted(int(i[1:]) for i in SEEN)  # "gone" has no row

    seen = set(SEEN)
    everything = _ids(c.get("/recommendations/heavy?k=100").json())  # over-fetch path
    assert len(everything) == N_ITEMS - len(SEEN) and not seen & set(everything)
    # every seen item is a Drama (even ids): with a category filter (has-id filter path)
    dramas = _ids(c.get("/recommendations/heavy?k=100&category=Drama").json())
    assert len(dramas) == N_ITEMS // 2 - len(SEEN) and not seen & set(dramas)
    anyway = _ids(c.get("/recommendations/heavy?k=100&exclude_seen=false").json())
    assert len(seen & set(anyway)) > 20  # more than the recent items: the rows did it

    # v2 orders the items differently and drops i0: the rows must follow the item ids.
    record, items, vecs, profiles = make_model("v2", n=N_ITEMS, dim=16, seed=1)
    order = np.random.default_rng(3).permutation(N_ITEMS)
    items, vecs = [items[r] for r in order if r != 0], vecs[[r for r in order if r != 0]]
    store.publish_model(record, items, vecs, profiles)
    r = c.post("/admin/models/v2/activate", headers=ADMIN)
    assert r.status_code == 200 and r.json()["serving"] == "v2"
    assert _state(store, "heavy").model_version == "v1"  # the dataflow has not moved them
    body = c.get("/recommendations/heavy?k=100").json()  # moved on the fly, on a copy
    assert body["model_version"] == "v2"
    assert len(body["items"]) == N_ITEMS - len(SEEN) and not seen & set(_ids(body))

    c.post(
        "/events", json={"event_type": "view", "user_id": "heavy", "item_id": "i1"}, headers=ADMIN
    )
    state = wait_for(lambda: (s := _state(store, "heavy")) and s.event_count == 72 and s, 30)
    index = {it.item_id: r for r, it in enumerate(items)}
    assert state.model_version == "v2"
    assert list(state.seen_rows) == [index[i] for i in [*SEEN[1:], "i1"]]  # order kept
    body = c.get("/recommendations/heavy?k=100").json()
    assert not (seen | {"i1"}) & set(_ids(body))
