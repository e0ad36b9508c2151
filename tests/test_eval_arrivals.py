"""Held-out items in the streaming evaluation: outside the model's trained catalogue,
each enters the product's through the catalogue path (the dataflow's CatalogWriter) at
its first event, placed by the model's item tower, and is scored by item id in the
harness's rows."""

from __future__ import annotations

import numpy as np
import pytest

from bench.synthetic import EVENT_TYPES, World, WorldConfig
from core.items import ItemHead, Upsert, item_text
from core.records import ItemRecord
from core.settings import Settings
from evaluation.arrivals import Arrivals, TextVectors, upsert_of
from evaluation.bundle import Bundle, assemble
from evaluation.prequential import Features, replay, systems_for
from evaluation.split import Split, temporal_split
from training.data import Interactions

DIM, TEXT = 16, 12


@pytest.fixture(scope="module")
def world_bundle() -> tuple[Split, Bundle]:
    world = World(WorldConfig(users=60, items=300, categories=10, dim=DIM, seed=3))
    ev = world.events(4000, seed=3)
    inter = Interactions.from_arrays(
        [f"u{u}" for u in ev.user.tolist()],
        [f"i{i}" for i in ev.item.tolist()],
        ev.ts,
        [EVENT_TYPES[k] for k in ev.kind.tolist()],
    )
    items = world.item_records()
    split = temporal_split(inter, items, 0.85, 0.05, seed=1)
    warm = np.array([i.item_id not in split.cold_items for i in items])
    settings = Settings(ranking={"candidates": 600})
    trained = [i for i, w in zip(items, warm, strict=True) if w]
    bundle = assemble(split.train, trained, world.item_vectors[warm], world.head(), settings)
    rng = np.random.default_rng(0)
    names = sorted({c for i in items for c in i.categories})
    bundle.item_head = ItemHead(
        rng.normal(size=(TEXT + 4 + len(names), 32)).astype(np.float32),
        rng.normal(size=32).astype(np.float32),
        rng.normal(size=(32, DIM)).astype(np.float32),
        np.zeros(DIM, np.float32),
        rng.normal(size=4).astype(np.float32),
        names,
    )
    bundle.held_out = [i for i, w in zip(items, warm, strict=True) if not w]
    text = rng.normal(size=(len(bundle.held_out), TEXT)).astype(np.float32)
    bundle.held_out_text = text / np.linalg.norm(text, axis=1, keepdims=True)
    return split, bundle


def test_the_write_is_what_a_catalogue_owner_would_send():
    item = ItemRecord("42", "Heat", ["Action", "Crime"], 0.0, {"year": 1995})
    assert upsert_of(item) == Upsert(
        item_id="42", title="Heat", categories=["Action", "Crime"], attributes={"year": 1995}
    )
    assert upsert_of(ItemRecord("43", "Untitled", [], 0.0, {"year": None})).attributes == {}
    arrivals = Arrivals([item])
    assert arrivals.due("42") == upsert_of(item) and arrivals.due("42") is None
    assert arrivals.due("7") is None and len(arrivals) == 0


def test_a_held_out_item_enters_the_product_at_its_first_event(world_bundle, tmp_path):
    split, bundle = world_bundle
    settings = Settings(state_dir=tmp_path, ranking={"candidates": 600})
    everything = len(bundle.catalogue())
    item, harness_row = bundle.held_out[0], len(bundle.items)
    stores: list[Features] = []
    with systems_for(split.train, bundle, settings, 5, ("product",), stores=stores) as (sy, _):
        (live,), (product,) = stores, sy
        catalog = live.catalogs.current
        assert catalog is not None and item.item_id not in catalog.index
        assert harness_row not in product.recommend("nobody", everything, 1e9, set(), 0)

        live.add(upsert_of(item))

        catalog = live.catalogs.current
        row = catalog.index[item.item_id]
        assert row >= len(bundle.items)  # a runtime row, after the trained ones
        assert catalog.items[row].title == item.title
        assert catalog.items[row].categories == item.categories
        expected = bundle.item_head.embed(bundle.held_out_text[:1], [item.categories])[0]
        np.testing.assert_allclose(catalog.vectors[row], expected, atol=1e-5)
        assert item.item_id in live.store.runtime.get([item.item_id])
        top = product.recommend("nobody", everything, 1e9, set(), 0)
        assert harness_row in top and all(0 <= r < everything for r in top)


def test_the_replay_adds_each_held_out_item_once_before_its_first_event(world_bundle, tmp_path):
    split, bundle = world_bundle
    settings = Settings(state_dir=tmp_path)
    test = split.test.take(slice(0, 300))
    cold_events = [i for i in test.item_ids.tolist() if i in split.cold_items]
    assert cold_events, "the slice must reach held-out items"
    run = replay(
        split.train,
        test,
        bundle,
        settings,
        seed=5,
        names=("popularity", "batch_two_tower", "product"),
        cold_items=split.cold_items,
        quiet=True,
    )
    assert run.n_items == len(bundle.catalogue())
    assert int(run.item_cold.sum()) == len(cold_events)
    for s in run.systems:
        assert all(0 <= r < run.n_items for top in run.lists[s] for r in top)


def test_text_vectors_come_from_the_cache_by_text(world_bundle):
    _, bundle = world_bundle
    lookup = TextVectors(bundle.held_out, bundle.held_out_text)
    texts = [item_text(i) for i in bundle.held_out[:3]]
    np.testing.assert_array_equal(lookup(texts), bundle.held_out_text[:3])
