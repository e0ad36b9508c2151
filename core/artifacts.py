"""The versioned model directory that training writes and publishing/serving read.

Layout: ``model_dir/<version>/`` holds one complete model; ``model_dir/LATEST`` names the
newest. A version directory appears only when complete (written to a temporary sibling,
then renamed), and LATEST is replaced atomically after it, so a reader never sees half a
model.

Everything here is numpy and JSON, so serving reads a model without an ML framework; the
one framework file, ``weights.pt``, is written by a function the trainer passes in.
``session.npz``, the learned session model (``core.session``), is optional: versions
trained before it existed, or without it, load with ``session`` None. ``item_head.npz``,
the item tower for items without a learned id (``core.items.ItemHead``, what embeds
items written at run time), is optional the same way: older versions load with
``item_head`` None.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.items import ItemHead
from core.records import ItemRecord, UserHead
from core.session import SessionModel, from_arrays, to_arrays

FILES = (
    "config.json",
    "metrics.json",
    "fingerprint.json",
    "weights.pt",
    "item_vectors.npy",
    "items.jsonl",
    "user_head.npz",
    "profiles.npz",
    "seen.json",
)
LATEST = "LATEST"
SESSION_FILE = "session.npz"
ITEM_HEAD_FILE = "item_head.npz"


class ArtifactError(Exception):
    """A model directory is incomplete or inconsistent."""


class MissingArtifactError(ArtifactError, FileNotFoundError):
    """A file the model directory must hold is absent."""


@dataclass
class ModelArtifacts:
    version: str
    path: Path
    dim: int
    items: list[ItemRecord]
    item_vectors: np.ndarray  # (n_items, dim) float32, L2-normalised, row order = items
    head: UserHead
    profile_user_ids: list[str]
    profile_vectors: np.ndarray  # (n_users, dim) float32
    seen: dict[str, list[str]]  # user -> item ids, most recent last
    metrics: dict[str, Any]
    config: dict[str, Any]
    fingerprint: dict[str, Any]
    created_at: str  # ISO-8601 UTC
    session: SessionModel | None = None
    item_head: ItemHead | None = None
    """The item tower for items training never saw; None for versions without one."""


def make_version(
    fingerprint: dict[str, Any], seed: int, config: dict[str, Any], now: datetime
) -> str:
    """UTC time for ordering, plus a short hash of what determined the model."""
    blob = json.dumps(
        {"fingerprint": fingerprint, "seed": seed, "config": config}, sort_keys=True, default=str
    )
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def write_artifacts(
    model_dir: Path,
    *,
    fingerprint: dict[str, Any],
    seed: int,
    config: dict[str, Any],
    metrics: dict[str, Any],
    items: list[ItemRecord],
    item_vectors: np.ndarray,
    head: UserHead,
    weights: Callable[[Path], None],
    profile_user_ids: list[str],
    profile_vectors: np.ndarray,
    seen: dict[str, list[str]],
    session: SessionModel | None = None,
    item_head: ItemHead | None = None,
    now: datetime | None = None,
) -> Path:
    """Write a complete version directory, then point LATEST at it; returns its path.

    ``weights(path)`` writes the trainer's own weights file (``weights.pt``) at ``path``.
    """
    now = now or datetime.now(UTC)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    base = make_version(fingerprint, seed, config, now)
    dim = int(item_vectors.shape[1])
    _check_shapes(len(items), dim, item_vectors, head, len(profile_user_ids), profile_vectors)

    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{base}-", dir=model_dir))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from a serving user
        meta = {
            "version": None,
            "created_at": now.isoformat().replace("+00:00", "Z"),
            "dim": dim,
            "seed": seed,
            **config,
        }
        _write_json(tmp / "metrics.json", metrics)
        _write_json(tmp / "fingerprint.json", fingerprint)
        weights(tmp / "weights.pt")
        np.save(tmp / "item_vectors.npy", np.ascontiguousarray(item_vectors, dtype=np.float32))
        with (tmp / "items.jsonl").open("w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
        np.savez(tmp / "user_head.npz", w1=head.w1, b1=head.b1, w2=head.w2, b2=head.b2)
        np.savez(
            tmp / "profiles.npz",
            user_ids=np.asarray(profile_user_ids, dtype=str),
            vectors=np.asarray(profile_vectors, dtype=np.float32),
        )
        _write_json(tmp / "seen.json", seen)
        if session is not None:
            if session.item_emb.shape[0] != len(items):
                raise ArtifactError(
                    f"session model has {session.item_emb.shape[0]} item rows, catalogue {len(items)}"
                )
            save_session(tmp, session)
        if item_head is not None:
            _check_item_head(item_head, dim)
            np.savez(tmp / ITEM_HEAD_FILE, allow_pickle=False, **item_head.arrays())
        version = _claim(tmp, model_dir, base, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_text(model_dir / LATEST, version + "\n")
    return model_dir / version


def _claim(tmp: Path, model_dir: Path, base: str, meta: dict[str, Any]) -> str:
    """Rename the finished temp dir to the first free version name (base, base-2, ...)."""
    for n in range(1, 1000):
        version = base if n == 1 else f"{base}-{n}"
        if (model_dir / version).exists():
            continue
        _write_json(tmp / "config.json", {**meta, "version": version})
        _fsync_dir(tmp)
        try:
            os.rename(tmp, model_dir / version)  # fails if another writer took the name
        except OSError:
            if (model_dir / version).exists():
                continue
            raise
        _fsync_dir(model_dir)
        return version
    raise ArtifactError(f"no free version name for {base} in {model_dir}")


def load_artifacts(path: Path) -> ModelArtifacts:
    """Read a version directory (or a model dir's LATEST) with every file checked."""
    path = Path(path)
    if not (path / "config.json").exists() and (path / LATEST).is_file():
        version = latest_version(path)
        if version is None:
            raise MissingArtifactError(f"{path / LATEST} names no complete model version")
        path = path / version
    if not path.is_dir():
        raise MissingArtifactError(f"model directory {path} does not exist")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise MissingArtifactError(f"model directory {path} is incomplete: missing {missing}")

    try:
        config = _read_json(path / "config.json")
        metrics = _read_json(path / "metrics.json")
        fp = _read_json(path / "fingerprint.json")
        seen = _read_json(path / "seen.json")
        item_vectors = np.load(path / "item_vectors.npy").astype(np.float32, copy=False)
        items = [
            ItemRecord(**json.loads(line))
            for line in (path / "items.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        with np.load(path / "user_head.npz") as z:
            head = UserHead(*(z[k].astype(np.float32) for k in ("w1", "b1", "w2", "b2")))
        with np.load(path / "profiles.npz") as z:
            profile_user_ids = [str(u) for u in z["user_ids"]]
            profile_vectors = z["vectors"].astype(np.float32, copy=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"model directory {path} has an unreadable file: {e}") from e

    dim = int(config.get("dim", item_vectors.shape[1] if item_vectors.ndim == 2 else -1))
    _check_shapes(
        len(items), dim, item_vectors, head, len(profile_user_ids), profile_vectors, where=path
    )
    return ModelArtifacts(
        version=str(config.get("version", path.name)),
        path=path,
        dim=dim,
        items=items,
        item_vectors=item_vectors,
        head=head,
        profile_user_ids=profile_user_ids,
        profile_vectors=profile_vectors,
        seen=seen,
        metrics=metrics,
        config=config,
        fingerprint=fp,
        created_at=str(config.get("created_at", "")),
        session=_checked_session(path, len(items)),
        item_head=load_item_head(path, dim),
    )


def _checked_session(path: Path, n_items: int) -> SessionModel | None:
    session = load_session(path)
    if session is not None and session.item_emb.shape[0] != n_items:
        raise ArtifactError(
            f"{path}: session model has {session.item_emb.shape[0]} item rows, catalogue {n_items}"
        )
    return session


def save_session(version_dir: Path, session: SessionModel) -> None:
    """Write ``session.npz`` (numpy arrays only) into a version directory."""
    np.savez(Path(version_dir) / SESSION_FILE, allow_pickle=False, **to_arrays(session))


def load_session(version_dir: Path) -> SessionModel | None:
    """A version's session model, or None when it has none; ArtifactError if unreadable."""
    path = Path(version_dir) / SESSION_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return from_arrays({k: z[k] for k in z.files})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{path} is unreadable: {e}") from e


def load_item_head(version_dir: Path, dim: int) -> ItemHead | None:
    """A version's item head, or None when it has none; ArtifactError if unreadable or
    its output is not ``dim`` wide."""
    path = Path(version_dir) / ITEM_HEAD_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            head = ItemHead.from_arrays(z)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{path} is unreadable: {e}") from e
    _check_item_head(head, dim, where=path)
    return head


def _check_item_head(head: ItemHead, dim: int, where: Path | None = None) -> None:
    at = f"{where}: " if where else ""
    hidden = head.b1.shape[0] if head.b1.ndim == 1 else -1
    shapes = {
        "w1": (head.w1.shape[1:], (hidden,)),
        "w2": (head.w2.shape, (hidden, dim)),
        "b2": (head.b2.shape, (dim,)),
        "id0": (head.id0.ndim, 1),
    }
    bad = {k: f"{got} != {want}" for k, (got, want) in shapes.items() if got != want}
    if head.text_dim <= 0:
        bad["w1"] = f"{head.w1.shape[0]} input rows leave no room for the text vector"
    if bad:
        raise ArtifactError(f"{at}inconsistent item head shapes: {bad}")


def list_versions(model_dir: Path) -> list[str]:
    """Complete version directories, oldest first (names sort by creation time)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in model_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()
    )


def latest_version(model_dir: Path) -> str | None:
    """The version LATEST names if it exists, else the newest complete one, else None."""
    model_dir = Path(model_dir)
    marker = model_dir / LATEST
    if marker.is_file():
        name = marker.read_text(encoding="utf-8").strip()
        if name and (model_dir / name / "config.json").is_file():
            return name
    versions = list_versions(model_dir)
    return versions[-1] if versions else None


# --- helpers ------------------------------------------------------------------


def _check_shapes(
    n_items: int,
    dim: int,
    item_vectors: np.ndarray,
    head: UserHead,
    n_profiles: int,
    profile_vectors: np.ndarray,
    where: Path | None = None,
) -> None:
    at = f"{where}: " if where else ""
    hidden = head.b1.shape[0] if head.b1.ndim == 1 else -1
    expected = {
        "item_vectors": (item_vectors.shape, (n_items, dim)),
        "profiles.vectors": (profile_vectors.shape, (n_profiles, dim)),
        "head.w1": (head.w1.shape, (dim, hidden)),
        "head.w2": (head.w2.shape, (hidden, dim)),
        "head.b2": (head.b2.shape, (dim,)),
    }
    bad = {k: f"{got} != {want}" for k, (got, want) in expected.items() if tuple(got) != want}
    if bad:
        raise ArtifactError(f"{at}inconsistent shapes: {bad}")
    if n_items and not np.allclose(np.linalg.norm(item_vectors, axis=1), 1.0, atol=1e-3):
        raise ArtifactError(f"{at}item vectors are not L2-normalised")


def _write_json(path: Path, obj: Any) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True, ensure_ascii=False, default=str)
        f.write("\n")


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _replace_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
