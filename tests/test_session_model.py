"""The learned session model: trained with full softmax in torch, served in numpy (the
same function), exported with a model version, applied as a re-rank term with a reason,
and swapped with the model version."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from api.service import Recommender, SessionModels
from core.artifacts import ArtifactError, load_artifacts, load_session, save_session
from core.catalog import Catalog
from core.ranking import RankParams, rerank
from core.records import ItemRecord
from core.session import GAP_BUCKETS, gap_buckets
from core.settings import RankingSettings
from core.state import RecentItem, UserState
from featurestore.store import FeatureStore
from tests.helpers import make_head, make_model, write_model_dir
from training.data import Interactions
from training.sequence import (
    SeqConfig,
    Sequences,
    new_model,
    next_scores,
    session_holdout_hr,
    torch_threads,
    train_session_model,
    windows,
)

N_ITEMS = 24


def chains(
    users: int = 40,
    length: int = 30,
    seed: int = 0,
    pause_item: int | None = None,
    step: int = 1,
    prefix: str = "u",
):
    """Each user walks the catalogue in steps of ``step`` from a random start, a minute apart.
    With ``pause_item``: after a day's pause the walk restarts at ``pause_item``."""
    rng = np.random.default_rng(seed)
    u, i, t = [], [], []
    for k in range(users):
        item, ts = int(rng.integers(N_ITEMS)), 1e6 * k
        for _ in range(length):
            u.append(f"{prefix}{k}")
            i.append(f"i{item}")
            t.append(ts)
            if pause_item is not None and rng.random() < 0.3:
                ts += 86400.0
                item = pause_item
            else:
                ts += 60.0
                item = (item + step) % N_ITEMS
    return Interactions.from_arrays(u, i, t, ["view"] * len(u))


ITEM_IDS = [f"i{j}" for j in range(N_ITEMS)]
SMALL = SeqConfig(kind="sasrec", dim=16, max_len=8, dropout=0.0, epochs=25, lr=1e-2, bias=True)


def test_gap_buckets_grow_with_the_log_of_the_pause():
    b = gap_buckets(np.array([np.nan, 0.0, 1.0, 59.0, 3600.0, -5.0, 1e12]))
    assert b.tolist()[:2] == [0, 1] and b[2] == 2 and b[5] == 1
    assert b[3] < b[4] < b[6] == GAP_BUCKETS - 1


def test_every_event_after_a_users_first_is_a_target_once_per_epoch():
    rows = np.arange(11)
    seqs = Sequences(["a", "b"], [rows, np.array([3])], [rows * 10.0, np.array([0.0])])
    for seed in range(5):
        w = windows(seqs, 99, 4, np.random.default_rng(seed))
        targets = w.targets[w.targets >= 0]
        assert sorted(targets.tolist()) == list(range(1, 11))  # user b has no target
        for items, tgt, prev in zip(w.items, w.targets, w.prev, strict=True):
            real = items != 99
            # each target follows its input; the first input's previous gap is unknown (0)
            assert all(t == i + 1 for i, t in zip(items, tgt, strict=True) if t >= 0)
            assert prev[real][0] == 0 and (prev[real][1:] == gap_buckets(np.array([10.0]))).all()


def test_numpy_session_model_computes_what_torch_trained():
    rng = np.random.default_rng(0)
    content = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    cfg = SeqConfig(dim=16, blocks=2, max_len=6, time_gaps=True, content=True, bias=True)
    model = new_model(N_ITEMS, cfg, seed=3, content=content)
    with torch.no_grad():  # random, not zero, biases and gap rows, so they are checked too
        for p in (model.bias, model.gap_prev.weight, model.gap_next.weight):
            p.normal_()
    model.eval()
    exported = model.export()
    for n in (1, 4, 6, 9):  # shorter than, equal to and longer than max_len
        rows = rng.integers(0, N_ITEMS, n)
        ts = np.cumsum(rng.exponential(300.0, n))
        with torch_threads():
            want = next_scores(model, [rows], [ts], [ts[-1] + 30.0], cfg.max_len)[0]
        h, attention = exported.encode(rows, ts, ts[-1] + 30.0)
        got = exported.scores(h, np.arange(N_ITEMS))
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert attention.shape == (min(n, cfg.max_len),) and abs(attention.sum() - 1) < 1e-5


def test_training_learns_the_next_item_and_repeats_with_a_seed():
    inter = chains()
    a, losses = train_session_model(inter, ITEM_IDS, SMALL, seed=7)
    b, _ = train_session_model(inter, ITEM_IDS, SMALL, seed=7)
    np.testing.assert_array_equal(a.item_emb, b.item_emb)
    assert losses[-1] < losses[0] / 3
    later = chains(users=10, length=20, seed=1, prefix="new")  # fewer steps than items
    assert session_holdout_hr(a, inter, later, ITEM_IDS, k=1) > 0.9


def test_time_gaps_let_the_model_tell_a_pause_from_a_step():
    inter = chains(users=60, pause_item=0)
    cfg_gaps = SeqConfig(**{**SMALL.to_dict(), "time_gaps": True})
    with_gaps, _ = train_session_model(inter, ITEM_IDS, cfg_gaps, seed=1)
    without, _ = train_session_model(inter, ITEM_IDS, SMALL, seed=1)
    rows, ts = [5, 6, 7], [0.0, 60.0, 120.0]

    def top(model, now):
        h, _ = model.encode(rows, ts, now)
        return int(np.argmax(model.scores(h, np.arange(N_ITEMS))))

    assert top(with_gaps, 180.0) == 8  # a minute later: the next step
    assert top(with_gaps, 120.0 + 86400.0) == 0  # a day later: the restart
    assert top(without, 180.0) == top(without, 120.0 + 86400.0)  # blind to the pause


def test_session_model_is_saved_with_the_version_and_checked(tmp_path):
    session, _ = train_session_model(chains(users=5), ITEM_IDS, SMALL, seed=1)
    version = write_model_dir(tmp_path, seed=1, n=N_ITEMS)
    assert load_artifacts(tmp_path / version).session is None  # optional file
    save_session(tmp_path / version, session)
    loaded = load_artifacts(tmp_path / version).session
    assert loaded is not None
    np.testing.assert_array_equal(loaded.item_emb, session.item_emb)
    np.testing.assert_array_equal(loaded.blocks[0].wq, session.blocks[0].wq)

    other = write_model_dir(tmp_path, seed=2, n=N_ITEMS + 1)
    save_session(tmp_path / other, session)  # rows of another catalogue
    with pytest.raises(ArtifactError, match="session model has 24 item rows, catalogue 25"):
        load_artifacts(tmp_path / other)
    (tmp_path / other / "session.npz").write_bytes(b"not an npz")
    with pytest.raises(ArtifactError, match="unreadable"):
        load_session(tmp_path / other)


def _catalog() -> Catalog:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = [
        ItemRecord(f"i{j}", f"Film {j}", ["Drama"], 0.0 if j == 20 else 0.5) for j in range(N_ITEMS)
    ]
    return Catalog("v1", items, vecs, make_head(8))


def test_sequence_term_ranks_the_next_step_first_and_names_a_recent_pick():
    session, _ = train_session_model(chains(), ITEM_IDS, SMALL, seed=3)
    catalog = _catalog()
    state = UserState("u", last_ts=1000.0)
    state.recent = [RecentItem(f"i{j}", 1000.0 - 60 * (9 - j), "view") for j in (7, 8, 9)]
    params = RankParams.from_settings(
        RankingSettings(weight_sequence=1.0, weight_session=0.0, weight_popularity=0.0)
    )
    candidates = [(r, 0.0) for r in range(N_ITEMS) if r not in (7, 8, 9)]
    ranked = rerank(candidates, catalog, state, {}, params, 1030.0, 1.0, 5, session)
    assert ranked[0].row == 10 and ranked[0].terms["sequence"] == pytest.approx(1.0)
    assert ranked[0].reasons[0].startswith("likely next after your recent picks, like Film ")
    # An item with no training events (popularity 0) sits at the candidates' median.
    all_ranked = rerank(candidates, catalog, state, {}, params, 1030.0, 1.0, 100, session)
    values = {r.row: r.terms["sequence"] for r in all_ranked}
    known = [v for r, v in values.items() if r != 20]
    assert values[20] == pytest.approx(float(np.median(known)), rel=1e-5)
    off = RankParams.from_settings(RankingSettings(weight_sequence=0.0))
    assert (
        "sequence"
        not in rerank(candidates, catalog, state, {}, off, 1030.0, 1.0, 5, session)[0].terms
    )


def test_items_written_at_run_time_sit_at_the_median_and_are_not_read_as_recent():
    """Rows beyond the session model's table (catalogue writes after training): no score
    of their own, and a recent pick among them is left out of the model's input."""
    session, _ = train_session_model(chains(), ITEM_IDS, SMALL, seed=3)
    base = _catalog()
    new = ItemRecord("new-1", "New film", ["Sci-Fi"], 0.0, {"runtime": True})
    catalog = base.with_rows({N_ITEMS: (new, base.vectors[0])}, N_ITEMS + 1, 1.0)
    state = UserState("u", last_ts=1000.0)
    state.recent = [RecentItem(f"i{j}", 1000.0 - 60 * (9 - j), "view") for j in (7, 8, 9)]
    params = RankParams.from_settings(
        RankingSettings(weight_sequence=1.0, weight_session=0.0, weight_popularity=0.0)
    )
    candidates = [(r, 0.0) for r in range(N_ITEMS + 1) if r not in (7, 8, 9)]
    before = rerank(candidates[:-1], base, state, {}, params, 1030.0, 1.0, 100, session)
    ranked = rerank(candidates, catalog, state, {}, params, 1030.0, 1.0, 100, session)
    values = {r.row: r.terms["sequence"] for r in ranked}
    known = [v for r, v in values.items() if r not in (20, N_ITEMS)]
    assert values[N_ITEMS] == pytest.approx(float(np.median(known)), rel=1e-5)
    assert ranked[0].row == before[0].row == 10
    state.recent.append(RecentItem("new-1", 1010.0, "view"))
    after_new = rerank(candidates[:-1], catalog, state, {}, params, 1030.0, 1.0, 100, session)
    assert [r.row for r in after_new] == [r.row for r in before]


def test_service_applies_each_versions_session_model_and_swaps_with_it(make_settings):
    settings = make_settings(
        weight_sequence=5.0, weight_session=0.0, weight_popularity=0.0, weight_covisit=0.0
    )
    first, _ = train_session_model(chains(), ITEM_IDS, SMALL, seed=3)
    second, _ = train_session_model(chains(step=-1), ITEM_IDS, SMALL, seed=3)
    store = FeatureStore.open(settings)
    try:
        now = 1_000_000.0
        for version, session in (("v1", first), ("v2", second)):
            record, items, vecs, profiles = make_model(version, n=N_ITEMS, dim=8)
            store.publish_model(record, items, vecs, profiles)
            save_session(_version_dir(settings, version), session)
        store.activate("v1")
        state = UserState("walker", vector=vecs[12].copy(), mass=1.0, last_ts=now - 60)
        state.model_version = "v1"
        state.recent = [RecentItem("i12", now - 60, "view")]
        store.write_user_states([state])
        catalogs = store.catalog_provider()
        catalogs.refresh()
        rec = Recommender(settings, store, catalogs)
        top = rec.recommend("walker", 3, now=now).items[0]
        assert top.row == 13 and top.reasons[0].startswith("likely next after your recent picks")

        # An item written at run time adds a row the session model never saw: the term
        # stays on for the rows it knows.
        new = ItemRecord("new-1", "New", ["Sci-Fi"], extra={"available": True})
        entries = store.runtime.put([(new, np.ones(4, np.float32))])
        store.runtime.write_rows("v1", entries, items, vecs, None)
        assert len(catalogs.refresh().items) == N_ITEMS + 1
        top = rec.recommend("walker", 3, now=now).items[0]
        assert top.row == 13 and top.reasons[0].startswith("likely next after your recent picks")

        store.activate("v2")  # a retrained version carries its own session model
        catalogs.refresh()
        top = rec.recommend("walker", 3, now=now).items[0]
        assert top.row == 11  # the walk the other way round
    finally:
        store.close()


def _version_dir(settings, version: str):
    path = settings.model_dir / version
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_version_without_a_session_model_ranks_without_the_term(tmp_path, make_settings):
    settings = make_settings(weight_sequence=1.0)
    models = SessionModels(settings)
    assert models.get("never-trained") is None
