"""Builders shared by tests: a small synthetic model, and waiting for conditions."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from core.records import ItemRecord, ModelRecord, Profile, UserHead
from core.settings import Settings, nested
from eventlog.admin import ensure_app_topics

T = TypeVar("T")


def make_head(dim: int, hidden: int = 4, seed: int = 0) -> UserHead:
    rng = np.random.default_rng(seed)
    return UserHead(
        (rng.normal(size=(dim, hidden)) * 0.1).astype(np.float32),
        np.zeros(hidden, np.float32),
        (rng.normal(size=(hidden, dim)) * 0.1).astype(np.float32),
        np.zeros(dim, np.float32),
    )


def make_model(version: str, n: int = 50, dim: int = 8, seed: int = 0, n_profiles: int = 5):
    """Items i0..i{n-1}: odd ones Sci-Fi, even ones Drama/War; random unit vectors."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = [
        ItemRecord(
            f"i{i}",
            f"Title {i}",
            ["Sci-Fi"] if i % 2 else ["Drama", "War"],
            i / n,
            {"year": 1990 + i},
        )
        for i in range(n)
    ]
    profiles = [Profile(f"u{j}", vecs[j], [f"i{j}", f"i{j + 1}"]) for j in range(n_profiles)]
    record = ModelRecord(
        version,
        dim,
        f"2024-01-{seed + 1:02d}T00:00:00Z",
        make_head(dim, seed=seed),
        {"recall_at_10": 0.1},
    )
    return record, items, vecs, profiles


def make_item_head(dim: int = 8, text_dim: int = 4, seed: int = 0):
    """A random item-tower head over ``text_dim``-d text vectors and the categories of
    ``make_model``'s items."""
    from core.items import ItemHead

    rng = np.random.default_rng(seed)
    names = ["Drama", "Sci-Fi", "War"]
    width = text_dim + 2 + len(names)
    return ItemHead(
        rng.normal(size=(width, 16)).astype(np.float32),
        np.zeros(16, np.float32),
        rng.normal(size=(16, dim)).astype(np.float32),
        np.zeros(dim, np.float32),
        rng.normal(size=2).astype(np.float32),
        names,
    )


def publish(store, version: str = "v1", **kw):
    record, items, vecs, profiles = make_model(version, **kw)
    store.publish_model(record, items, vecs, profiles)
    store.activate(version)
    return record, items, vecs, profiles


def wait_for(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll until fn() is truthy; return it. Fails with the last value on timeout."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    assert value, f"condition not met within {timeout}s (last value: {value!r})"
    return value


def isolated_settings(state_dir: Path, bootstrap: str | None = None, **overrides) -> Settings:
    """Settings with their own state dir and, given a broker, their own fresh topics."""
    kw: dict = {"state_dir": state_dir}
    if bootstrap:
        suffix = uuid.uuid4().hex[:8]
        kw |= {
            "bootstrap_servers": bootstrap,
            "events_topic": f"events-{suffix}",
            "items_topic": f"items-{suffix}",
            "dead_letter_topic": f"events-{suffix}.dlq",
            "topic_partitions": 3,
        }
    settings = Settings(**nested(kw | overrides))
    if bootstrap:
        ensure_app_topics(settings)
    return settings


def write_model_dir(model_dir: Path, seed: int, n: int = 60, dim: int = 8) -> str:
    """What `just train` leaves behind: a version directory and LATEST pointing at it."""
    from core.artifacts import write_artifacts

    record, items, vecs, profiles = make_model("ignored", n=n, dim=dim, seed=seed)
    path = write_artifacts(
        model_dir,
        fingerprint={"test": seed},
        seed=seed,
        config={"test": True},
        metrics={"recall_at_10": 0.2},
        items=items,
        item_vectors=vecs,
        head=record.head,
        weights=lambda path: path.write_bytes(b""),  # serving never reads weights.pt
        profile_user_ids=[p.user_id for p in profiles],
        profile_vectors=np.stack([p.vector for p in profiles]),
        seen={p.user_id: p.seen for p in profiles},
    )
    return path.name


def movielens_missing(data_dir: Path) -> str | None:
    """Why the MovieLens tests cannot run here (None: they can). Its licence forbids
    shipping the data with the project, so a checkout without it skips them; CI has it
    and sets RECSYS_REQUIRE_DATA=1, so there they fail instead of skipping."""
    if (data_dir / "ml-100k.inter").exists() or os.environ.get("RECSYS_REQUIRE_DATA") == "1":
        return None
    return f"MovieLens 100K not found at {data_dir} (set RECSYS_DATA_DIR to its directory)"


def require_movielens(data_dir: Path) -> None:
    """Skip the calling test or fixture unless MovieLens is at ``data_dir`` (or required)."""
    import pytest

    if reason := movielens_missing(data_dir):
        pytest.skip(reason)


def train_slice_model(tmp: Path, settings: Settings) -> Path:
    """Train a small model on a MovieLens slice (users 80, items 300, 3 epochs: ~15 s)
    into ``tmp/models``; the version directory."""
    from core.artifacts import latest_version
    from training.train import main as train

    require_movielens(settings.data_dir)
    model_dir = tmp / "models"
    slice_ = ["--max-users", "80", "--max-items", "300", "--epochs", "3", "--batch-size", "256"]
    argv = [*slice_, "--model-dir", str(model_dir), "--cache-dir", str(tmp / "cache")]
    assert train([*argv, "--no-publish", "--quiet"]) == 0
    return model_dir / str(latest_version(model_dir))


def publish_slice_model(tmp: Path, settings: Settings) -> None:
    """``train_slice_model``, then published and made live in ``settings``' store."""
    from featurestore import FeatureStore
    from featurestore.publish import publish_model_dir

    version_dir = train_slice_model(tmp, settings)
    store = FeatureStore.open(settings)
    try:
        publish_model_dir(store, version_dir)
    finally:
        store.close()


def by_user(*values):
    """Events (or erasure markers) grouped by user, in order: one chunk of a shard's
    micro-batch as the flow hands it to ``ShardState.on_batch``."""
    return _grouped(lambda v: v.event.user_id, values)


def by_item(*values):
    """Events grouped by item, as ``by_user`` (the trends' shards)."""
    return _grouped(lambda v: v.event.item_id, values)


def _grouped(key, values):
    groups: dict = {}
    for v in values:
        groups.setdefault(key(v), []).append(v)
    return groups
