"""The typed API client (``client``) against a running service: each call returns the
typed response, and each error is one line naming what to do."""

from __future__ import annotations

import time

import httpx
import pytest

from api.app import create_app
from client import (
    ApiError,
    ApiUnreachable,
    AuthError,
    ItemsAccepted,
    ModelsOverview,
    NotFound,
    Recommendations,
    RecsysClient,
    SimilarItems,
    UserFeatures,
)
from featurestore import FeatureStore
from infra.broker import free_port
from infra.process import serve_in_thread
from tests.helpers import publish

READ, WRITE, ADMIN = "r-key", "w-key", "a-key"


def test_an_unreachable_service_is_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    with RecsysClient(url) as api, pytest.raises(ApiUnreachable) as e:
        api.health()
    assert str(e.value).startswith(f"cannot reach the API at {url}")
    assert "recsys serve" in str(e.value) and "\n" not in str(e.value)


def test_errors_carry_status_and_detail_without_a_server():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            return httpx.Response(403, json={"detail": "read key required"})
        return httpx.Response(404, json={"detail": "unknown user"})

    api = RecsysClient("http://api.test", transport=httpx.MockTransport(handler))
    with pytest.raises(AuthError) as e:
        api.models()
    assert e.value.status == 403 and e.value.detail == "read key required"
    assert str(e.value) == "403 from http://api.test/models: read key required"
    with pytest.raises(NotFound):
        api.user("a b/c")


@pytest.mark.integration
def test_every_call_against_the_running_service(broker, make_settings):
    settings = make_settings(
        broker,
        inprocess=False,
        impressions_enabled=False,
        read_keys={READ},
        write_keys={WRITE},
        admin_keys={ADMIN},
    )
    store = FeatureStore.open(settings)
    publish(store, "v1", n=40, dim=8, seed=0)
    publish(store, "v2", n=40, dim=8, seed=1)
    store.close()
    with serve_in_thread(create_app(settings)) as url:
        anonymous = RecsysClient(url)
        reader = RecsysClient(url, READ)
        writer = RecsysClient(url, WRITE)
        admin = RecsysClient(url, ADMIN)

        assert anonymous.health().status == "ok"
        ready = anonymous.ready()
        assert ready.status in ("ok", "ready") and ready.failed == []
        with pytest.raises(AuthError) as e:
            anonymous.recommend("u1")
        assert e.value.status == 401

        recs = reader.recommend("u1", k=3, explain=True)
        assert isinstance(recs, Recommendations) and recs.model_version == "v2"
        assert len(recs.items) == 3 and recs.items[0].score_breakdown is not None
        assert recs.strategy == "personalized"
        only = reader.recommend("u1", k=5, categories=["Sci-Fi"])
        assert all("Sci-Fi" in item.categories for item in only.items)

        like = reader.similar(recs.items[0].item_id, k=4, categories=["Sci-Fi"])
        assert isinstance(like, SimilarItems) and len(like.items) == 4
        assert recs.items[0].item_id not in {it.item_id for it in like.items}
        assert all("Sci-Fi" in it.categories and it.reason for it in like.items)
        with pytest.raises(NotFound):
            reader.similar("nope")

        user = reader.user("u1")
        assert isinstance(user, UserFeatures) and user.has_long_term_profile
        with pytest.raises(NotFound):
            reader.user("nobody")

        # listing models is a read; publishing and activating need the admin key
        listed = reader.models()
        assert isinstance(listed, ModelsOverview) and listed.active == "v2"
        assert [m.version for m in listed.models] == ["v1", "v2"]
        assert [m.active for m in listed.models] == [False, True]
        assert all(m.created_at for m in listed.models)
        with pytest.raises(AuthError):
            reader.activate("v1")
        assert admin.activate("v1").active == "v1"
        with pytest.raises(NotFound):
            admin.activate("v9")

        event = {
            "event_type": "view",
            "user_id": "u-client",
            "item_id": recs.items[0].item_id,
            "timestamp": time.time(),
        }
        assert writer.post_events(event) == 1
        assert writer.post_events([event, {**event, "event_type": "click"}]) == 2
        with pytest.raises(ApiError) as bad:
            writer.post_events({**event, "event_type": "nope"})
        assert bad.value.status == 422
        for api in (anonymous, reader, writer, admin):
            api.close()


@pytest.mark.integration
def test_catalogue_writes_round_trip_to_the_items_topic(broker, make_settings):
    from core import items
    from tests.test_catalog_api import writes_on

    settings = make_settings(broker, inprocess=False, impressions_enabled=False, write_keys={WRITE})
    store = FeatureStore.open(settings)
    publish(store, "v1", n=20, dim=8)
    store.close()
    with serve_in_thread(create_app(settings)) as url, RecsysClient(url, WRITE) as api:
        added = api.add_items({"item_id": "c-1", "title": "Alien", "categories": ["Sci-Fi"]})
        assert isinstance(added, ItemsAccepted) and added.item_ids == ["c-1"]
        assert api.add_items([{"item_id": "c-2", "title": "B"}]).accepted == 1
        assert api.update_item("i2", available=False).item_ids == ["i2"]
        assert api.remove_item("i3").item_ids == ["i3"]
        with pytest.raises(ApiError) as bad:
            api.add_items({"item_id": "c-3"})
        assert bad.value.status == 422 and bad.value.kind == "missing_title"
        assert "every new item needs a title" in str(bad.value) and "\n" not in str(bad.value)
        with pytest.raises(NotFound) as missing:
            api.remove_item("nope")
        assert "may still be on its way" in str(missing.value)
        with pytest.raises(AuthError):
            RecsysClient(url).add_items({"item_id": "c-4", "title": "D"})

    got = sorted((w for _, w in writes_on(settings, 4)), key=lambda w: w.item_id)
    assert got == [
        items.Upsert(item_id="c-1", title="Alien", categories=["Sci-Fi"]),
        items.Upsert(item_id="c-2", title="B"),
        items.Patch(item_id="i2", available=False),
        items.Delete(item_id="i3"),
    ]
