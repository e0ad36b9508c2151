"""The item tower's head exported with the model: numpy ``ItemHead.embed`` gives what the
trained torch tower gives an item without a learned id, and the file round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.artifacts import ITEM_HEAD_FILE, ArtifactError, load_artifacts, write_artifacts
from core.records import ItemRecord
from tests.helpers import make_model
from training.data import Interactions
from training.fit import FitConfig, build_examples, fit, item_log_q
from training.model import ModelConfig, TwoTower, category_matrix, id_index

TEXT_DIM = 24  # the head takes any text width; the real encoder's is 384


@pytest.fixture(scope="module")
def trained():
    """A two-tower fitted for two epochs on a synthetic log: 12 items, 6 of them unseen."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    genres = ["Drama", "Sci-Fi", "War", "Comedy"]
    items = [
        ItemRecord(f"i{i}", f"Item {i}", [genres[i % 4], genres[(i + 1) % 4]][: 1 + i % 2], 0.0)
        for i in range(12)
    ]
    item_ids = [i.item_id for i in items]
    text = rng.normal(size=(12, TEXT_DIM)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    n = 300
    inter = Interactions.from_arrays(
        [f"u{u}" for u in rng.integers(0, 20, n)],
        [f"i{i}" for i in rng.integers(0, 6, n)],  # items 6..11 never occur: id row 0
        np.arange(n, dtype=np.float64),
        ["view"] * n,
    )
    categories, names = category_matrix(items)
    model = TwoTower(text, categories, id_index(inter, item_ids), ModelConfig(dim=8))
    cfg = FitConfig(epochs=2, batch_size=64, history=5, half_life=60.0)
    examples = build_examples(inter, item_ids, {"view": 1.0}, cfg.history, cfg.half_life)
    fit(model, examples, item_log_q(inter, item_ids), cfg, rng, quiet=True)
    return model, items, text, names


def tower_output_with_id0(model: TwoTower) -> np.ndarray:
    """The torch tower in eval mode, every item's id index forced to 0."""
    tower = model.items
    saved = tower.id_index.clone()
    tower.id_index.zero_()
    try:
        tower.eval()
        with torch.no_grad():
            return tower().numpy()
    finally:
        tower.id_index.copy_(saved)


def test_numpy_head_equals_the_torch_tower_for_an_item_without_id(trained):
    model, items, text, names = trained
    head = model.items.export_head(names)
    assert head.category_names == sorted({c for i in items for c in i.categories})
    assert head.text_dim == TEXT_DIM
    assert all(a.dtype == np.float32 for a in (head.w1, head.b1, head.w2, head.b2, head.id0))
    got = head.embed(text, [i.categories for i in items])
    np.testing.assert_allclose(got, tower_output_with_id0(model), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # items unseen in training are served exactly this vector
    unseen = model.item_vectors()[6:]
    np.testing.assert_allclose(got[6:], unseen, atol=1e-5)


def test_a_category_the_model_never_saw_adds_nothing(trained):
    model, _, text, names = trained
    head = model.items.export_head(names)
    plain = head.embed(text[:1], [["Drama"]])
    np.testing.assert_allclose(head.embed(text[:1], [["Drama", "Western"]]), plain, atol=1e-6)


def write_version(model_dir, item_head=None):
    record, items, vecs, profiles = make_model("ignored", n=20, dim=8)
    return write_artifacts(
        model_dir,
        fingerprint={"test": 1},
        seed=1,
        config={"test": True},
        metrics={},
        items=items,
        item_vectors=vecs,
        head=record.head,
        item_head=item_head,
        weights=lambda path: path.write_bytes(b""),
        profile_user_ids=[p.user_id for p in profiles],
        profile_vectors=np.stack([p.vector for p in profiles]),
        seen={p.user_id: p.seen for p in profiles},
    )


def test_the_item_head_file_round_trips(trained, tmp_path):
    model, items, text, names = trained
    head = model.items.export_head(names)
    path = write_version(tmp_path, head)
    assert (path / ITEM_HEAD_FILE).is_file()
    loaded = load_artifacts(path).item_head
    assert loaded is not None and loaded.category_names == names
    for k, a in head.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[k], a)
    cats = [i.categories for i in items]
    np.testing.assert_array_equal(loaded.embed(text, cats), head.embed(text, cats))


def test_a_version_without_the_item_head_loads_with_none(tmp_path):
    path = write_version(tmp_path)
    assert not (path / ITEM_HEAD_FILE).exists()
    assert load_artifacts(path).item_head is None


def test_an_item_head_of_another_width_is_refused(trained, tmp_path):
    model, _, _, names = trained
    head = model.items.export_head(names)
    path = write_version(tmp_path)
    wide = type(head)(
        head.w1,
        head.b1,
        np.zeros((head.w2.shape[0], 16), np.float32),
        np.zeros(16, np.float32),
        head.id0,
        names,
    )
    np.savez(path / ITEM_HEAD_FILE, **wide.arrays())
    with pytest.raises(ArtifactError, match="item head"):
        load_artifacts(path)
