"""Training end to end on a small real slice of MovieLens, plus the pieces it relies on.

The slow part (text encoder + training) runs once per session per configuration.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.artifacts import (
    FILES,
    ArtifactError,
    MissingArtifactError,
    latest_version,
    list_versions,
    load_artifacts,
)
from core.events import ValidEvent
from core.fold import FoldParams, decay_weights, fold_event
from core.records import ItemRecord
from core.settings import get_settings
from core.state import UserState
from tests.helpers import movielens_missing, require_movielens
from training import text
from training.data import (
    DataError,
    Interactions,
    InvalidEventsWarning,
    before,
    load_items,
    load_jsonl_events,
    load_movielens,
    parse_time,
    quantile_time,
    restrict,
    temporal_split,
)
from training.fit import build_examples
from training.model import UserHeadNet, in_batch_softmax_loss
from training.train import main

SETTINGS = get_settings()
DATA = SETTINGS.data_dir
SLICE = ["--max-users", "60", "--max-items", "300", "--epochs", "2", "--batch-size", "256"]
UNTIL = "1998-01-01T00:00:00Z"

NO_DATA = movielens_missing(DATA)
needs_data = pytest.mark.skipif(NO_DATA is not None, reason=str(NO_DATA))


# --- the user head: numpy serving == torch training ---------------------------


def test_user_head_numpy_apply_matches_torch():
    torch.manual_seed(0)
    net = UserHeadNet(dim=16, hidden=128)
    for p in net.parameters():  # lin2 starts at zero; make the whole head non-trivial
        torch.nn.init.normal_(p, std=0.3)
    head = net.export()
    assert [a.shape for a in (head.w1, head.b1, head.w2, head.b2)] == [
        (16, 128),
        (128,),
        (128, 16),
        (16,),
    ]
    assert all(a.dtype == np.float32 for a in (head.w1, head.b1, head.w2, head.b2))
    pooled = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32) * 5
    with torch.no_grad():
        expected = net(torch.from_numpy(pooled)).numpy()
    got = np.stack([head.apply(p) for p in pooled])
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --- the loss ------------------------------------------------------------------


def test_loss_applies_logq_and_masks_duplicate_targets():
    gen = torch.Generator().manual_seed(1)
    users = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen))
    items = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen))
    targets = torch.tensor([0, 2, 0, 4])
    log_q = torch.log(torch.tensor([0.4, 0.1, 0.2, 0.1, 0.2]))
    loss = in_batch_softmax_loss(users, items, targets, log_q, temperature=0.1)

    logits = users @ items[targets].T / 0.1 - log_q[targets]
    expected = 0.0
    for r in range(4):
        keep = [c for c in range(4) if c == r or targets[c] != targets[r]]
        expected -= torch.log_softmax(logits[r, keep], 0)[keep.index(r)]
    assert float(loss) == pytest.approx(float(expected / 4), rel=1e-5)


# --- training examples -----------------------------------------------------------


def test_build_examples_matches_a_plain_loop():
    inter = Interactions.from_arrays(
        ["u1", "u2", "u1", "u1", "u2", "u1"],
        ["a", "b", "b", "c", "a", "a"],
        [100.0, 150.0, 200.0, 4000.0, 160.0, 4000.0],
        ["rating", "click", "view", "rating", "view", "purchase"],
    )
    w = {"rating": 3.0, "click": 2.0, "view": 1.0, "purchase": 8.0}
    items = ["a", "b", "c"]
    ex = build_examples(inter, items, w, history=2, half_life=3600.0)

    expected = []
    for u in sorted(set(inter.user_ids)):
        ev = [
            (t, i, e)
            for uu, i, t, e in zip(
                inter.user_ids, inter.item_ids, inter.ts, inter.event_types, strict=False
            )
            if uu == u
        ]
        for p in range(1, len(ev)):
            hist = ev[max(0, p - 2) : p]
            ref = hist[-1][0]
            pairs = sorted((items.index(i), w[e] * 2 ** (-(ref - t) / 3600.0)) for t, i, e in hist)
            expected.append((items.index(ev[p][1]), pairs))
    got = []
    for r in range(len(ex)):
        pairs = sorted(
            (int(i), float(x))
            for i, x in zip(ex.hist_items[r], ex.hist_weights[r], strict=False)
            if x
        )
        got.append((int(ex.targets[r]), pairs))
    assert len(got) == len(expected)
    for (gt, gp), (et, ep) in zip(got, expected, strict=False):
        assert gt == et
        assert [i for i, _ in gp] == [i for i, _ in ep]
        np.testing.assert_allclose([x for _, x in gp], [x for _, x in ep], rtol=1e-6)


# --- loaders -------------------------------------------------------------------------


def test_missing_data_dir_names_path_and_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="RECSYS_DATA_DIR") as e:
        load_movielens(tmp_path / "nope")
    assert "nope" in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"\*\.inter"):
        load_movielens(tmp_path)


def test_malformed_files_give_line_numbers(tmp_path):
    (tmp_path / "x.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    )
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t1\n")
    with pytest.raises(DataError, match=r"x\.inter:2"):
        load_movielens(tmp_path)
    (tmp_path / "x.inter").write_text("user:token\titem_id:token\n1\t1\n")
    with pytest.raises(DataError, match="header lacks"):
        load_movielens(tmp_path)
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t1\tsoon\n")
    with pytest.raises(DataError, match="timestamp"):
        load_movielens(tmp_path)


def test_item_file_parses_genres_and_years(tmp_path):
    path = tmp_path / "x.item"
    path.write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tBlade Runner\t1982\tFilm-Noir Sci-Fi\n"
        "3\tunkonwn\tunkonwn\tunknown\n"
    )
    items = load_items(path)
    assert items[0] == ItemRecord(
        "1", "Toy Story", ["Animation", "Children's", "Comedy"], 0.0, {"year": 1995}
    )
    assert items[1].categories == ["Film-Noir", "Sci-Fi"]
    assert items[2].categories == [] and items[2].extra == {"year": None}
    assert text.item_text(items[1]) == "Blade Runner (1982). Genres: Film-Noir, Sci-Fi."


def test_jsonl_loader_counts_and_reports_invalid_lines(tmp_path):
    lines = [
        '{"event_type": "view", "user_id": "u1", "item_id": "i1",'
        ' "timestamp": "2020-01-01T00:00:10Z"}',
        '{"event_type": "purchase", "user_id": "u1", "item_id": "i2", "timestamp": 1577836805}',
        "not json",
        "",
        '{"event_type": "teleport", "user_id": "u1", "item_id": "i1", "timestamp": 1}',
        '{"event_type": "view", "user_id": "u2", "item_id": "i1"}',
        '{"event_type": "click", "user_id": "u2", "item_id": "i3", "timestamp": 1e12}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(InvalidEventsWarning, match="skipped 3 invalid line") as w:
        inter, items, invalid = load_jsonl_events(path, SETTINGS.fold.event_weights)
    assert [n for n, _ in invalid] == [3, 5, 6]
    assert "line 3" in str(w[0].message) and "line 6" in str(w[0].message)
    assert list(inter.item_ids) == ["i2", "i1", "i3"]  # sorted by time; future events pass
    assert list(inter.event_types) == ["purchase", "view", "click"]
    assert [i.item_id for i in items] == ["i1", "i2", "i3"]
    np.testing.assert_array_equal(inter.weights({"view": 1, "purchase": 8, "click": 2}), [8, 1, 2])
    with pytest.raises(FileNotFoundError):
        load_jsonl_events(tmp_path / "missing.jsonl", SETTINGS.fold.event_weights)


def test_time_helpers():
    assert parse_time("1998-01-01T00:00:00Z") == 883612800.0
    assert parse_time("883612800") == 883612800.0
    with pytest.raises(ValueError, match="timezone"):
        parse_time("1998-01-01T00:00:00")
    inter = Interactions.from_arrays(list("abcde"), list("vwxyz"), [5, 1, 4, 2, 3], ["view"] * 5)
    assert list(inter.ts) == [1, 2, 3, 4, 5]
    train, test = temporal_split(inter, quantile_time(inter, 0.6))
    assert list(train.ts) == [1, 2, 3] and list(test.ts) == [4, 5]
    assert list(before(inter, 3.0).ts) == [1, 2]


def test_text_embeddings_are_cached(tmp_path, monkeypatch):
    items = [ItemRecord("1", "Toy Story", ["Comedy"], 0.0, {"year": 1995})]
    calls = []

    def fake_encode(texts, batch_size=128, quiet=False):
        calls.append(texts)
        v = np.ones((len(texts), text.TEXT_DIM), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    monkeypatch.setattr(text, "encode", fake_encode)
    first = text.embed_items(items, tmp_path)
    second = text.embed_items(items, tmp_path)
    assert len(calls) == 1 and calls[0] == ["Toy Story (1995). Genres: Comedy."]
    np.testing.assert_array_equal(first, second)


@needs_data
def test_main_reports_missing_data_dir(tmp_path, capsys):
    code = main(
        [
            "--data-dir",
            str(tmp_path / "nope"),
            "--model-dir",
            str(tmp_path / "m"),
            "--no-publish",
            "--quiet",
        ]
    )
    assert code == 2
    assert "RECSYS_DATA_DIR" in capsys.readouterr().err


# --- end to end on a real slice ---------------------------------------------------------


def _train(tmp: Path, name: str, *extra: str) -> Path:
    model_dir = tmp / name
    argv = [
        *SLICE,
        "--model-dir",
        str(model_dir),
        "--cache-dir",
        str(tmp / "cache"),
        "--no-publish",
        "--quiet",
        *extra,
    ]
    assert main(argv) == 0
    return model_dir


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    require_movielens(DATA)
    tmp = tmp_path_factory.mktemp("training")
    return {
        "a": _train(tmp, "a"),
        "b": _train(tmp, "b"),
        "until": _train(tmp, "until", "--until", UNTIL),
    }


def test_model_dir_is_complete_and_consistent(runs):
    model_dir = runs["a"]
    version = latest_version(model_dir)
    assert version and list_versions(model_dir) == [version]
    assert (model_dir / "LATEST").read_text().strip() == version
    art = load_artifacts(model_dir / version)
    assert all((art.path / f).is_file() for f in FILES)
    assert art.version == version and art.created_at.endswith("Z")
    n, d = art.item_vectors.shape
    assert n == len(art.items) == 300 and d == art.dim == 64
    assert art.item_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(art.item_vectors, axis=1), 1.0, atol=1e-5)
    assert art.profile_vectors.shape == (len(art.profile_user_ids), d)
    assert 0 < len(art.profile_user_ids) <= 60
    np.testing.assert_allclose(np.linalg.norm(art.profile_vectors, axis=1), 1.0, atol=1e-5)
    assert art.head.w1.shape == (d, 128) and art.head.w2.shape == (128, d)
    assert set(art.seen) == set(art.profile_user_ids)
    assert all(0 < len(v) <= 500 for v in art.seen.values())
    assert max(i.popularity for i in art.items) == pytest.approx(1.0)
    assert all(0.0 <= i.popularity <= 1.0 for i in art.items)
    for key in ("recall_at_10", "ndcg_at_10", "users_evaluated"):
        assert key in art.metrics
    assert 0.0 <= art.metrics["recall_at_10"] <= 1.0 and art.metrics["users_evaluated"] > 0
    assert "recall_at_10" in art.metrics["popularity"]
    assert art.fingerprint["files"][0]["sha256"] and art.fingerprint["used"]["events"] > 0
    assert load_artifacts(model_dir).version == version  # a model dir resolves via LATEST
    state = torch.load(art.path / "weights.pt", weights_only=True)
    assert "head.lin1.weight" in state
    # the item head: an item without a learned id, as the saved torch tower places it
    head = art.item_head
    assert head is not None and head.text_dim == text.TEXT_DIM and head.w2.shape[1] == d
    assert head.category_names == sorted({c for i in art.items for c in i.categories})
    x = torch.cat(
        [
            state["items.text"],
            state["items.ids.weight"][0].expand(n, -1),
            state["items.categories"],
        ],
        dim=1,
    )
    hidden = torch.relu(x @ state["items.mlp.0.weight"].T + state["items.mlp.0.bias"])
    tower = torch.nn.functional.normalize(
        hidden @ state["items.mlp.2.weight"].T + state["items.mlp.2.bias"], dim=-1
    )
    got = head.embed(state["items.text"].numpy(), [i.categories for i in art.items])
    np.testing.assert_allclose(got, tower.numpy(), atol=1e-5)


def test_same_seed_gives_identical_model(runs):
    a, b = (load_artifacts(runs[k]) for k in ("a", "b"))
    np.testing.assert_array_equal(a.item_vectors, b.item_vectors)
    np.testing.assert_array_equal(a.profile_vectors, b.profile_vectors)
    assert a.metrics == b.metrics
    assert a.fingerprint == b.fingerprint


def test_until_excludes_later_events(runs):
    art = load_artifacts(runs["until"])
    cutoff = parse_time(UNTIL)
    assert art.config["until_ts"] == cutoff and art.fingerprint["until_ts"] == cutoff
    assert parse_time(art.fingerprint["used"]["time_max"]) < cutoff
    assert art.fingerprint["until_time"].startswith("1998-01-01T00:00:00")

    inter, items = load_movielens(DATA)
    inter, _, _ = restrict(before(inter, cutoff), items, 60, 300)
    assert (inter.ts < cutoff).all()
    for u, seen in art.seen.items():
        mine = inter.item_ids[inter.user_ids == u]
        assert seen == list(dict.fromkeys(mine[::-1]))[::-1][-500:]


def test_profiles_equal_the_dataflow_fold(runs):
    """A profile is what the live fold would hold after the same events, through the head."""
    art = load_artifacts(runs["until"])
    cutoff = parse_time(UNTIL)
    inter, items = load_movielens(DATA)
    inter, _, _ = restrict(before(inter, cutoff), items, 60, 300)
    vec = {i.item_id: v for i, v in zip(art.items, art.item_vectors, strict=False)}
    params = FoldParams.from_settings(SETTINGS)
    for u in art.profile_user_ids[:10]:
        state = UserState(u)
        mask = inter.user_ids == u
        for i, t, e in zip(
            inter.item_ids[mask], inter.ts[mask], inter.event_types[mask], strict=False
        ):
            fold_event(state, ValidEvent(e, u, i, float(t), None), vec.get(i), [], params, row=None)
        expected = art.head.apply(state.vector)
        got = art.profile_vectors[art.profile_user_ids.index(u)]
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert art.config["fit"]["half_life"] == SETTINGS.fold.half_life_seconds
    assert decay_weights(
        np.array([0.0]), SETTINGS.fold.half_life_seconds, SETTINGS.fold.half_life_seconds
    )[0] == pytest.approx(0.5)


@needs_data
def test_trains_from_a_jsonl_event_log(tmp_path, capsys):
    """The product's event format trains too; bad lines are counted, not dropped silently."""
    inter, _ = load_movielens(DATA)
    keep = np.isin(inter.item_ids, [str(i) for i in range(1, 41)])
    inter = inter.take(keep)
    types = ["view", "click", "rating", "purchase"]
    lines = [
        json.dumps({"event_type": types[n % 4], "user_id": u, "item_id": i, "timestamp": t})
        for n, (u, i, t) in enumerate(
            zip(inter.user_ids[:3000], inter.item_ids, inter.ts, strict=False)
        )
    ]
    lines[10] = '{"event_type": "view"}'
    lines[20] = '{"event_type": "view", "user_id": "1", "item_id": "2", "timestamp": "yesterday"}'
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(lines) + "\n")
    item_file = tmp_path / "some.item"
    src = (DATA / "ml-100k.item").read_text().splitlines()
    item_file.write_text("\n".join(src[:41]) + "\n")  # header + items 1..40

    argv = [
        "--events-jsonl",
        str(log),
        "--items",
        str(item_file),
        "--epochs",
        "1",
        "--model-dir",
        str(tmp_path / "m"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-publish",
        "--quiet",
    ]
    with pytest.warns(InvalidEventsWarning, match="line 11.*line 21"):
        assert main(argv) == 0
    art = load_artifacts(tmp_path / "m")
    assert art.fingerprint["source"] == "jsonl" and art.fingerprint["invalid_lines"] == 2
    assert art.fingerprint["used"]["events"] == 2998
    assert len(art.items) == 40 and art.items[0].title == "Toy Story"
    assert "Recall@10" in capsys.readouterr().out.splitlines()[-1]


def test_incomplete_model_dir_names_missing_file(runs, tmp_path):
    src = runs["a"] / latest_version(runs["a"])
    broken = tmp_path / src.name
    shutil.copytree(src, broken)
    (broken / "user_head.npz").unlink()
    with pytest.raises(MissingArtifactError, match=r"user_head\.npz"):
        load_artifacts(broken)
    shutil.copy(src / "user_head.npz", broken / "user_head.npz")
    np.save(broken / "item_vectors.npy", np.zeros((3, 64), dtype=np.float32))
    with pytest.raises(ArtifactError, match="item_vectors"):
        load_artifacts(broken)
    (broken / "metrics.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"metrics\.json|unreadable"):
        load_artifacts(broken)
    with pytest.raises(MissingArtifactError):
        load_artifacts(tmp_path / "nothing-here")


def test_a_second_run_gets_its_own_version(runs):
    versions = list_versions(runs["a"].parent / "a")
    assert len(versions) == 1
    config = json.loads((runs["a"] / versions[0] / "config.json").read_text())
    assert config["version"] == versions[0] and config["seed"] == 42
    assert math.isfinite(config["split_ts"])
