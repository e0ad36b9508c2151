"""The prequential replay on a small synthetic stream with planted session intents:
deterministic, and the real-time systems must beat the batch one."""

from __future__ import annotations

import numpy as np
import pytest

from bench.synthetic import EVENT_TYPES, World, WorldConfig
from core.settings import Settings
from evaluation.bundle import assemble
from evaluation.prequential import SYSTEMS, replay
from evaluation.report import figures, write
from evaluation.split import temporal_split
from training.data import Interactions
from training.sequence import SeqConfig


@pytest.fixture(scope="module")
def world_split():
    world = World(WorldConfig(users=60, items=300, categories=10, dim=16, seed=3))
    ev = world.events(4000, seed=3)
    inter = Interactions.from_arrays(
        [f"u{u}" for u in ev.user.tolist()],
        [f"i{i}" for i in ev.item.tolist()],
        ev.ts,
        [EVENT_TYPES[k] for k in ev.kind.tolist()],
    )
    items = world.item_records()
    split = temporal_split(inter, items, 0.85, 0.05, seed=1)
    return world, items, split


def _run(world_split, tmp_path, names=SYSTEMS, max_events=400):
    world, items, split = world_split
    settings = Settings(state_dir=tmp_path, ranking={"weight_covisit": 1.0})
    bundle = assemble(split.train, items, world.item_vectors, world.head(), settings)
    test = split.test.take(slice(0, max_events))
    return replay(
        split.train,
        test,
        bundle,
        settings,
        seed=5,
        names=names,
        cold_items=split.cold_items,
        quiet=True,
        sequence=SMALL_SEQUENCE,
        seeds=(1,),
    )


# The sequence baselines small and short, one seed: this world is tiny.
SMALL_SEQUENCE = {
    k: SeqConfig(kind=k, dim=16, max_len=20, epochs=2, lr=1e-2) for k in ("sasrec", "gru4rec")
}


def test_same_seed_same_numbers_twice(world_split, tmp_path):
    a = _run(world_split, tmp_path / "a", max_events=250)
    b = _run(world_split, tmp_path / "b", max_events=250)
    expected = [f"{s}_seed1" if s in SMALL_SEQUENCE else s for s in SYSTEMS]
    assert a.systems == b.systems == expected
    for s in a.systems:
        np.testing.assert_array_equal(a.ranks[s], b.ranks[s])
        assert a.lists[s] == b.lists[s]
    assert figures(a) == figures(b)


def test_realtime_beats_batch_on_planted_session_intents(world_split, tmp_path):
    run = _run(
        world_split,
        tmp_path,
        names=("popularity", "batch_two_tower", "realtime_no_rerank", "product"),
        max_events=500,
    )
    fig = figures(run)
    hr = {s: m["hr"] for s, m in fig["systems"].items()}
    assert hr["realtime_no_rerank"] > 1.3 * hr["batch_two_tower"], hr
    assert hr["product"] > 1.3 * hr["batch_two_tower"], hr
    assert hr["product"] > hr["popularity"], hr
    assert fig["events"] == 500 and 0.0 <= fig["cold_user_share"] < 1.0
    out = write(fig, {**_META, "train_events": len(world_split[2].train)}, tmp_path / "report")
    text = out.read_text()
    assert "| product |" in text and "HR@10" in text
    assert (tmp_path / "report" / "hr_by_system.png").stat().st_size > 1000


_META = {
    "command": "pytest",
    "seed": 5,
    "cutoff_time": "-",
    "cutoff_quantile": 0.85,
    "cold_items": 15,
    "cold_share": 0.05,
    "cpus": 2,
    "seconds": {"total": 1.0, "train": 0.0, "replay": 1.0},
    "settings": {"weight_covisit": 1.0},
    "knn": "default",
    "als": "default",
}
