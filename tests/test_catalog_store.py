"""Runtime catalogue writes in the store: slots, a version's rows, the in-memory catalogue
following them by revision, and a new model carrying them (both adapters)."""

from __future__ import annotations

import numpy as np

from core import items as ci
from core.records import ItemRecord
from tests.helpers import make_item_head, make_model, publish

TEXT_DIM = 4


def text(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=TEXT_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def write(store, version, changes, head):
    entries = store.runtime.put(changes)
    cat = store.load_catalog(version)
    store.runtime.write_rows(
        version, entries, cat.items[: cat.trained], cat.vectors[: cat.trained], head
    )
    return entries


def test_a_new_item_gets_a_row_after_the_trained_ones_and_the_catalogue_follows(store):
    head = make_item_head()
    record, items, vecs, profiles = make_model("v1")
    store.publish_model(record, items, vecs, profiles, item_head=head)
    store.activate("v1")
    catalogs = store.catalog_provider()
    assert len(catalogs.refresh().items) == 50
    new = ItemRecord("new-1", "A space opera", ["Sci-Fi"], extra={"available": True})
    write(store, "v1", [(new, text(1))], head)

    catalog = catalogs.refresh()
    assert len(catalog.items) == 51 and catalog.trained == 50
    row = catalog.index["new-1"]
    assert row == 50 and catalog.items[row].title == "A space opera"
    expected = head.embed(text(1)[None, :], [["Sci-Fi"]])[0]
    np.testing.assert_allclose(catalog.vectors[row], expected, atol=1e-6)
    hits = store.search_items("v1", expected, 3)
    assert hits[0][0] == row
    assert catalogs.refresh() is catalog  # nothing new: the same object, no reload


def test_a_trained_item_changes_in_place_and_its_slot_is_a_tombstone(store):
    head = make_item_head()
    publish(store)
    catalogs = store.catalog_provider()
    before = catalogs.refresh()
    base = before.items[3]
    changed = ci.apply(base, ci.Patch(item_id="i3", available=False))
    assert changed is not None
    write(store, "v1", [(changed, text(3))], head)
    catalog = catalogs.refresh()
    assert catalog is not before
    assert not catalog.available[3] and catalog.index["i3"] == 3
    np.testing.assert_array_equal(catalog.vectors[3], before.vectors[3])  # same text
    assert catalog.tombstones.tolist() == [50]
    assert before.available[3]  # a reader holding the old catalogue is not disturbed


def test_publishing_a_new_model_carries_runtime_items_re_embedded(store):
    head1, head2 = make_item_head(seed=1), make_item_head(seed=2)
    record, items, vecs, profiles = make_model("v1")
    store.publish_model(record, items, vecs, profiles, item_head=head1)
    store.activate("v1")
    new = ItemRecord("new-1", "A space opera", ["Sci-Fi"], extra={"available": True})
    write(store, "v1", [(new, text(1))], head1)

    record2, items2, vecs2, profiles2 = make_model("v2", n=40, seed=5)
    store.publish_model(record2, items2, vecs2, profiles2, item_head=head2)
    rev = store.runtime.revision()
    store.activate("v2")
    late = ItemRecord("new-2", "A war film", ["War"], extra={"available": True})
    write(store, "v1", [(late, text(2))], head1)  # the dataflow still on v1
    store.catch_up_runtime_items("v2", rev)

    catalog = store.load_catalog("v2")
    assert [catalog.index["new-1"], catalog.index["new-2"]] == [40, 41]
    np.testing.assert_allclose(
        catalog.vectors[40], head2.embed(text(1)[None, :], [["Sci-Fi"]])[0], atol=1e-6
    )
    assert store.item_ids("v2")[40:] == ["new-1", "new-2"]


def test_without_an_item_head_a_new_item_sits_among_its_categories(store):
    publish(store)
    new = ItemRecord("new-1", "Another war film", ["War"], extra={"available": True})
    write(store, "v1", [(new, text(1))], None)
    catalog = store.load_catalog("v1")
    war = [i for i, it in enumerate(catalog.items[:50]) if "War" in it.categories]
    centroid = catalog.vectors[war].mean(axis=0)
    np.testing.assert_allclose(catalog.vectors[50], centroid / np.linalg.norm(centroid), atol=1e-6)
