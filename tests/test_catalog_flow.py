"""Catalogue writes through the dataflow (``dataflow.catalog``), wired as in production
between Bytewax's testing source and the real embedded store: rows for new items from
the model's item tower, changes in place, deletes as unavailability, dead letters with
the contract's reason, and a replay that changes nothing."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import numpy as np
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Message

from core.settings import Settings
from dataflow.catalog import CatalogWriter
from dataflow.flow import CatalogInput, Folders, Sinks, build_flow
from featurestore import FeatureStore
from featurestore.edge import EdgeBackend
from tests.helpers import make_item_head, make_model

SETTINGS = Settings()
TEXT_DIM = 4


def fake_encode(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for the text encoder (the real one: tests/test_catalog_live.py)."""
    out = np.array(
        [np.frombuffer(hashlib.sha256(t.encode()).digest()[:TEXT_DIM], np.uint8) for t in texts],
        dtype=np.float32,
    )
    out -= 127.5
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def item_message(body: dict | bytes, offset: int, key: bytes = b"k") -> Message:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Message(topic="items", partition=0, offset=offset, key=key, value=value)


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(EdgeBackend(tmp_path / "store"))
    record, items, vecs, profiles = make_model("v1", n=20)
    s.publish_model(record, items, vecs, profiles, item_head=make_item_head())
    s.activate("v1")
    yield s
    s.close()


def run(store: FeatureStore, bodies: list[dict | bytes]) -> list:
    dead: list = []
    catalogs = store.catalog_provider()
    catalogs.refresh()
    sinks = Sinks(TestingSink(dead), TestingSink([]), TestingSink([]))
    folders = Folders.create(SETTINGS, store, catalogs)
    msgs = [item_message(b, k) for k, b in enumerate(bodies)]
    items = CatalogInput(
        TestingSource(msgs, batch_size=3), CatalogWriter(store, catalogs, fake_encode)
    )
    flow = build_flow(SETTINGS, TestingSource([]), sinks, folders, items)
    run_main(flow, epoch_interval=timedelta(seconds=10))
    return dead


def upsert(item_id: str, title: str, categories: list[str], **kw) -> dict:
    return {"op": "upsert", "item_id": item_id, "title": title, "categories": categories, **kw}


def test_a_new_item_is_embedded_by_the_models_item_tower_and_served(store):
    assert run(store, [upsert("new-1", "A space opera", ["Sci-Fi"])]) == []
    catalog = store.load_catalog("v1")
    row = catalog.index["new-1"]
    assert row == 20 and catalog.items[row].title == "A space opera"
    text = fake_encode(["A space opera. Genres: Sci-Fi."])
    expected = make_item_head().embed(text, [["Sci-Fi"]])[0]
    np.testing.assert_allclose(catalog.vectors[row], expected, atol=1e-6)
    assert store.search_items("v1", expected, 1)[0][0] == row


def test_patch_and_delete_change_the_item_in_place(store):
    dead = run(
        store,
        [
            upsert("new-1", "A space opera", ["Sci-Fi"]),
            {"op": "patch", "item_id": "new-1", "title": "A space opera, redux"},
            {"op": "patch", "item_id": "i3", "available": False},
            upsert("new-2", "A war film", ["War"]),
            {"op": "delete", "item_id": "new-2"},
        ],
    )
    assert dead == []
    catalog = store.load_catalog("v1")
    assert catalog.items[catalog.index["new-1"]].title == "A space opera, redux"
    assert not catalog.available[catalog.index["i3"]]
    assert not catalog.available[catalog.index["new-2"]]
    assert catalog.available[catalog.index["new-1"]]
    # only the available items are candidates
    vec = catalog.vectors[catalog.index["new-2"]]
    rows = [r for r, _ in store.search_items("v1", vec, 30, item_filter=_available())]
    assert catalog.index["new-2"] not in rows and catalog.index["i3"] not in rows


def _available():
    from featurestore.backend import ItemFilter

    return ItemFilter(available_only=True)


def test_bad_writes_are_dead_lettered_with_the_contracts_reason(store):
    dead = run(
        store,
        [
            {"op": "upsert", "item_id": "x"},
            b"{not json",
            upsert("y", "t" * 600, []),
            {"op": "patch", "item_id": "nobody", "title": "Nope"},
            upsert("ok", "Fine", ["Drama"]),
        ],
    )
    kinds = [dict(m.headers)["dlq.kind"].decode() for m in dead]
    assert sorted(kinds) == ["malformed_json", "missing_title", "text_too_long", "unknown_item"]
    assert "ok" in store.load_catalog("v1").index


def test_applying_the_same_writes_again_changes_nothing(store):
    writes = [
        upsert("new-1", "A space opera", ["Sci-Fi"]),
        upsert("new-2", "A war film", ["War"]),
        {"op": "patch", "item_id": "new-1", "available": False},
    ]
    run(store, writes)
    first = store.load_catalog("v1")
    run(store, writes)  # a crash before the offsets were committed: the same messages again
    again = store.load_catalog("v1")
    assert len(again.items) == len(first.items) == 22
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert [it.title for it in again.items] == [it.title for it in first.items]
    assert again.available.tolist() == first.available.tolist()
