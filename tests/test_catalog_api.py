"""Catalogue writes through the API (POST/PATCH/DELETE /items) against the real dev broker:
what lands on the items topic, the 422s with the contract's kind, 404s, keys, a broker
that is down. The dataflow's folding of the writes is tested elsewhere; here the topic
is the outcome."""

from __future__ import annotations

import time

import msgspec
import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from api.app import create_app
from core import items
from core.items import Delete, Patch, Upsert
from core.settings import Settings
from featurestore import FeatureStore
from infra.broker import free_port
from tests.helpers import publish

pytestmark = pytest.mark.integration

WRITE, ADMIN, READ = "w-key", "a-key", "r-key"


def read_items_topic(settings: Settings, expect: int, timeout: float = 10.0) -> list:
    """Every message of the items topic (all partitions); waits a moment for strays."""
    topic = settings.kafka.items_topic
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "test-catalog",
            "enable.auto.commit": "false",
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    got, deadline = [], time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        got += [m for m in consumer.consume(500, 0.2) if m.error() is None]
    time.sleep(0.3)
    got += [m for m in consumer.consume(500, 0.3) if m.error() is None]
    consumer.close()
    return got


def writes_on(settings: Settings, expect: int) -> list[tuple[str, items.ItemWrite]]:
    """(key, decoded write) of each message, in offset order per partition."""
    return [(m.key().decode(), items.decode(m.value())) for m in read_items_topic(settings, expect)]


@pytest.fixture
def service(broker, make_settings):
    settings = make_settings(
        broker,
        inprocess=False,
        impressions_enabled=False,
        write_keys={WRITE},
        admin_keys={ADMIN},
        read_keys={READ},
    )
    store = FeatureStore.open(settings)
    publish(store, "v1", n=20, dim=8)
    store.close()
    with TestClient(create_app(settings), headers={"X-API-Key": WRITE}) as client:
        yield settings, client


def test_post_put_and_delete_produce_exactly_their_writes_keyed_by_item(service):
    settings, client = service
    one = {"item_id": "new-1", "title": "Space Truckers", "categories": ["Sci-Fi"]}
    r = client.post("/items", json=one)
    assert r.status_code == 202 and r.json() == {"accepted": 1, "item_ids": ["new-1"]}
    batch = [
        {"op": "upsert", "item_id": "new-2", "title": "Heat", "description": "LA, 1995."},
        {"item_id": "new-3", "title": "Ran", "attributes": {"year": 1985}, "available": False},
    ]
    r = client.post("/items", json=batch)
    assert r.status_code == 202 and r.json() == {"accepted": 2, "item_ids": ["new-2", "new-3"]}
    r = client.patch("/items/i3", json={"available": False, "title": "Title 3 (restored)"})
    assert r.status_code == 202 and r.json() == {"accepted": 1, "item_ids": ["i3"]}
    r = client.delete("/items/i4", headers={"X-API-Key": ADMIN})  # admin keys write too
    assert r.status_code == 202 and r.json() == {"accepted": 1, "item_ids": ["i4"]}

    got = writes_on(settings, 5)
    assert all(key == w.item_id for key, w in got)
    assert sorted((w for _, w in got), key=lambda w: w.item_id) == [
        Patch(item_id="i3", title="Title 3 (restored)", available=False),
        Delete(item_id="i4"),
        Upsert(item_id="new-1", title="Space Truckers", categories=["Sci-Fi"]),
        Upsert(item_id="new-2", title="Heat", description="LA, 1995."),
        Upsert(item_id="new-3", title="Ran", available=False, attributes={"year": 1985}),
    ]


@pytest.mark.parametrize(
    ("body", "kind", "says"),
    [
        ({"item_id": "x1", "description": "no title"}, "missing_title", "title"),
        ({"item_id": "x1", "title": "T" * (items.MAX_TITLE_CHARS + 1)}, "text_too_long", "title"),
        ({"item_id": "x1", "title": "T", "colour": "red"}, "unknown_field", "colour"),
        ({"item_id": "x1", "title": "T", "categories": "Drama"}, "invalid_field", "categories"),
        (
            [{"item_id": f"x{n}", "title": "T"} for n in range(items.MAX_BATCH + 1)],
            "too_many",
            f"at most {items.MAX_BATCH}",
        ),
        ({"item_id": "x1", "op": "delete"}, "invalid_field", "upserts only"),
    ],
)
def test_invalid_posts_are_422_with_the_contracts_kind_and_produce_nothing(
    service, body, kind, says
):
    settings, client = service
    good = {"item_id": "ok", "title": "Fine"}
    r = client.post("/items", json=[good, body] if isinstance(body, dict) else body)
    assert r.status_code == 422, r.text
    assert r.json()["kind"] == kind and says in r.json()["detail"]
    assert read_items_topic(settings, 0, timeout=0.5) == []


def test_patch_checks_its_fields_with_the_contract(service):
    settings, client = service
    for body, kind in [
        ({"title": "T" * (items.MAX_TITLE_CHARS + 1)}, "text_too_long"),
        ({"price": 3}, "unknown_field"),
        ({"available": "no"}, "invalid_field"),
        ({"item_id": "i9", "title": "T"}, "unknown_field"),
        ({}, "invalid_field"),
        (["title"], "invalid_field"),
    ]:
        r = client.patch("/items/i3", json=body)
        assert r.status_code == 422 and r.json()["kind"] == kind, (body, r.text)
    r = client.patch("/items/i3", content=b"{not json")
    assert r.status_code == 422 and r.json()["kind"] == "malformed_json"
    assert read_items_topic(settings, 0, timeout=0.5) == []


def test_unknown_items_are_404_for_patch_and_delete(service):
    settings, client = service
    for r in (client.patch("/items/nope", json={"available": False}), client.delete("/items/nope")):
        assert r.status_code == 404
        assert "'nope' is not in the live catalogue" in r.json()["detail"]
        assert "may still be on its way" in r.json()["detail"]
    assert read_items_topic(settings, 0, timeout=0.5) == []


def test_catalogue_writes_need_a_write_or_admin_key(service):
    settings, client = service
    no_key = {"X-API-Key": ""}
    body = {"item_id": "k1", "title": "T"}
    assert client.post("/items", json=body, headers={"X-API-Key": READ}).status_code == 401
    for r in (
        client.post("/items", json=body, headers=no_key),
        client.patch("/items/i1", json={"available": False}, headers=no_key),
        client.delete("/items/i1", headers=no_key),
    ):
        assert r.status_code == 401 and "write API key" in r.json()["detail"]
    assert read_items_topic(settings, 0, timeout=0.5) == []


def test_the_openapi_document_states_the_bodies(service):
    _, client = service
    doc = client.get("/openapi.json", headers={"X-API-Key": READ}).json()
    schemas = doc["components"]["schemas"]
    assert schemas["ItemUpsert"]["required"] == ["item_id", "title"]
    assert "op" not in schemas["ItemPatch"]["properties"]
    assert "item_id" not in schemas["ItemPatch"]["properties"]
    post = doc["paths"]["/items"]["post"]["requestBody"]["content"]["application/json"]
    assert {"$ref": "#/components/schemas/ItemUpsert"} in post["schema"]["oneOf"]


def test_a_broker_that_is_down_is_503_with_a_message(make_settings):
    dead = f"127.0.0.1:{free_port()}"
    settings = make_settings(None, bootstrap_servers=dead, inprocess=False)
    store = FeatureStore.open(settings)
    publish(store, "v1", n=20, dim=8)
    store.close()
    with TestClient(create_app(settings)) as client:
        t0 = time.monotonic()
        r = client.post("/items", json={"item_id": "z", "title": "Z"})
        assert r.status_code == 503 and "Kafka" in r.json()["detail"]
        assert time.monotonic() - t0 < 7
        r = client.delete("/items/i1")
        assert r.status_code == 503 and "Kafka" in r.json()["detail"]


def test_the_wire_format_is_the_contracts():
    """What the API produces decodes with the contract the dataflow reads with."""
    w = Upsert(item_id="a", title="A", categories=["X"])
    assert items.decode(items.encode(w)) == w
    assert msgspec.json.decode(items.encode(Delete(item_id="a"))) == {
        "op": "delete",
        "item_id": "a",
    }
