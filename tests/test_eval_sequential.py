"""The sequence baselines in the prequential replay (SASRec, GRU4Rec: several seeds,
reported as mean and spread), the breakdowns by history length and session position,
and the logged-candidate scoring used to tune the product's weights."""

from __future__ import annotations

import numpy as np
import pytest

import evaluation.logged
from core.settings import Settings
from evaluation.baselines import Popularity
from evaluation.bundle import assemble
from evaluation.logged import Logged
from evaluation.prequential import replay
from evaluation.report import figures, groups, markdown
from evaluation.sequential import SequenceBaseline, spread
from tests.test_eval_replay import _META, world_split  # noqa: F401  (fixture)
from tests.test_session_model import ITEM_IDS, chains
from training.data import Interactions
from training.sequence import SeqConfig

TINY = SeqConfig(kind="gru4rec", dim=16, max_len=8, dropout=0.0, epochs=15, lr=1e-2)


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_precomputed_answers_are_the_answers_asked_one_by_one(kind):
    train = chains(users=20, seed=0)
    test = chains(users=6, length=12, seed=5, prefix="new")
    cfg = SeqConfig(**{**TINY.to_dict(), "kind": kind, "epochs": 3})
    ahead = SequenceBaseline.trained(kind, train, ITEM_IDS, Popularity(train, ITEM_IDS), cfg, 1)
    live = SequenceBaseline.trained(kind, train, ITEM_IDS, Popularity(train, ITEM_IDS), cfg, 1)
    users, rows, ts = test.user_ids.tolist(), [int(i[1:]) for i in test.item_ids], test.ts.tolist()
    ahead.prepare(users, rows, ts, 5)
    seen: dict[str, set[int]] = {}
    for u, r, t in zip(users, rows, ts, strict=True):
        exclude = seen.get(u, set())
        assert ahead.recommend(u, 5, t, exclude, 0) == live.recommend(u, 5, t, exclude, 0)
        for s in (ahead, live):
            s.observe(u, r, t)
            s.pop.observe(u, r, t)
        seen.setdefault(u, set()).add(r)


def test_a_gru_fed_the_live_history_follows_the_walk():
    train = chains(users=40)
    gru = SequenceBaseline.trained("gru4rec", train, ITEM_IDS, Popularity(train, ITEM_IDS), TINY, 2)
    for j in (3, 4, 5):
        gru.observe("walker", j, 60.0 * j)
    assert gru.recommend("walker", 1, 400.0, {3, 4, 5}, 3) == [6]
    assert gru.recommend("stranger", 3, 400.0, set(), 0) == gru.pop.recommend("x", 3, [])


def test_seeded_systems_are_reported_as_mean_and_spread(world_split, tmp_path):  # noqa: F811
    world, items, split = world_split
    settings = Settings(state_dir=tmp_path)
    bundle = assemble(split.train, items, world.item_vectors, world.head(), settings)
    cfg = SeqConfig(kind="sasrec", dim=16, max_len=10, epochs=2)
    run = replay(
        split.train,
        split.test.take(slice(0, 150)),
        bundle,
        settings,
        seed=5,
        names=("popularity", "sasrec", "product"),
        quiet=True,
        sequence={"sasrec": cfg},
        seeds=(1, 2),
    )
    assert run.systems == ["popularity", "sasrec_seed1", "sasrec_seed2", "product"]
    assert groups(run.systems) == {
        "popularity": ["popularity"],
        "sasrec": ["sasrec_seed1", "sasrec_seed2"],
        "product": ["product"],
    }
    fig = figures(run)
    m = fig["systems"]["sasrec"]
    per = [m["seeds"][s]["hr"] for s in ("1", "2")]
    assert (m["hr"], m["hr_std"]) == pytest.approx(spread(per))
    assert "hr_std" not in fig["systems"]["product"]
    # history length and session position, HR and NDCG for every reported system
    assert sum(r["events"] for r in fig["history"]) == 150
    assert sum(r["events"] for r in fig["session_position"]) == 150
    assert set(fig["session_position"][0]["ndcg"]) == {"popularity", "sasrec", "product"}
    assert (run.session_position >= 1).all() and (run.history >= 0).all()
    text = markdown(fig, {**_META, "train_events": len(split.train)})
    assert "| SASRec (2 seeds) | " in text and " ± " in text
    assert "by the position of the event in the user's session" in text
    assert "by the user's events before this one" in text


def test_session_position_counts_from_the_last_pause(world_split, tmp_path):  # noqa: F811
    world, items, split = world_split
    settings = Settings(state_dir=tmp_path, fold={"session_gap_seconds": 100.0})
    bundle = assemble(split.train, items, world.item_vectors, world.head(), settings)
    item = split.train.item_ids[0]
    t0 = float(split.test.ts[0])
    # a fresh user: two events a minute apart, a pause, three more
    ts = [t0, t0 + 60, t0 + 1000, t0 + 1010, t0 + 1020]
    test = Interactions.from_arrays(["fresh"] * 5, [item] * 5, ts, ["view"] * 5)
    run = replay(split.train, test, bundle, settings, 5, names=("popularity",), quiet=True)
    assert run.session_position.tolist() == [1, 2, 1, 2, 3]
    assert run.history.tolist() == [0, 1, 2, 3, 4]


def test_logged_candidates_score_a_weighting_like_the_service_ranks(monkeypatch):
    # two events, three candidates each, terms (a, b); targets: candidate 2, then absent
    features = np.array(
        [[[1.0, 0.0], [0.5, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]], "f4"
    )
    logged = Logged(["a", "b"], features, np.ones((2, 3), bool), np.array([2, -1]))
    assert logged.recall() == 0.5
    assert logged.hits(np.array([1.0, 0.0], "f4")).tolist() == [True, False]  # k=10 > 3
    monkeypatch.setattr(evaluation.logged, "K", 1)
    assert logged.hr({"a": 1.0}) == 0.0
    assert logged.hr({"a": 1.0, "b": 2.0}) == 0.5
    assert logged.hr({"a": 1.0, "b": 1.0}) == 0.0  # a tie: the earlier candidate first


def test_spread_is_mean_and_sample_std():
    assert spread([0.2, 0.4]) == pytest.approx((0.3, 0.1414213), rel=1e-5)
    assert spread([0.25]) == (0.25, 0.0)
