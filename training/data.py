"""Loading interaction logs and item catalogues into one time-ordered shape.

Training, evaluation and profiles all read the same ``Interactions``, sorted by event
time, so "before the split" and "before --until" mean the same thing everywhere.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.events import InvalidEvent, decode, validate
from core.records import ItemRecord, iso

HINT = "set RECSYS_DATA_DIR or pass --data-dir (MovieLens 100K in RecBole atomic format)"

# Genre placeholder in ML-100K: a missing label, not a category anyone browses.
_NO_GENRE = {"unknown"}


class DataError(ValueError):
    """A data file exists but cannot be read as the format it claims to be."""


class InvalidEventsWarning(UserWarning):
    """Some lines of an event log were rejected; the message lists where and why."""


@dataclass(frozen=True, slots=True)
class Interactions:
    """Events as parallel arrays, sorted by (time, original order)."""

    user_ids: np.ndarray  # object array of str
    item_ids: np.ndarray  # object array of str
    ts: np.ndarray  # float64 unix seconds
    event_types: np.ndarray  # object array of str

    @classmethod
    def from_arrays(
        cls,
        user_ids: Sequence[str] | np.ndarray,
        item_ids: Sequence[str] | np.ndarray,
        ts: Sequence[float] | np.ndarray,
        event_types: Sequence[str] | np.ndarray,
    ) -> Interactions:
        ts_arr = np.asarray(ts, dtype=np.float64)
        if not len(user_ids) == len(item_ids) == len(ts_arr) == len(event_types):
            raise ValueError("user_ids, item_ids, ts and event_types differ in length")
        order = np.argsort(ts_arr, kind="stable")
        return cls(
            user_ids=_objects(user_ids)[order],
            item_ids=_objects(item_ids)[order],
            ts=ts_arr[order],
            event_types=_objects(event_types)[order],
        )

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, selector: np.ndarray | slice) -> Interactions:
        """A subset by boolean mask or increasing indices; time order is kept."""
        return Interactions(
            self.user_ids[selector],
            self.item_ids[selector],
            self.ts[selector],
            self.event_types[selector],
        )

    def weights(self, event_weights: Mapping[str, float]) -> np.ndarray:
        """Per-event weight w(type), the same table the dataflow folds with."""
        types, inverse = np.unique(self.event_types, return_inverse=True)
        missing = [t for t in types if t not in event_weights]
        if missing:
            raise ValueError(f"no weight for event types {missing}; known: {sorted(event_weights)}")
        table = np.array([event_weights[t] for t in types], dtype=np.float64)
        return table[inverse.reshape(-1)] if len(types) else np.zeros(0)

    def time_range(self) -> tuple[float, float] | None:
        return (float(self.ts[0]), float(self.ts[-1])) if len(self) else None


def _objects(values: Sequence[str] | np.ndarray) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = [str(v) for v in values]
    return arr


# --- MovieLens (RecBole atomic files) ----------------------------------------


def find_file(data_dir: Path, suffix: str) -> Path:
    """The one ``*.{suffix}`` file in ``data_dir``; RecBole names files after the dataset."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist; {HINT}")
    found = sorted(data_dir.glob(f"*.{suffix}"))
    if not found:
        raise FileNotFoundError(f"no *.{suffix} file in {data_dir}; {HINT}")
    if len(found) > 1:
        raise DataError(f"several *.{suffix} files in {data_dir}: {[p.name for p in found]}")
    return found[0]


def _read_atomic(path: Path, required: Sequence[str]) -> dict[str, list[str]]:
    """Columns of a tab-separated RecBole file, by field name (``user_id:token`` -> user_id)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}); {HINT}") from None
    if not lines:
        raise DataError(f"{path} is empty; {HINT}")
    names = [h.split(":", 1)[0].strip() for h in lines[0].split("\t")]
    absent = [r for r in required if r not in names]
    if absent:
        raise DataError(f"{path} header lacks {absent} (found {names}); {HINT}")
    cols: dict[str, list[str]] = {n: [] for n in names}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(names):
            raise DataError(
                f"{path}:{n}: expected {len(names)} tab-separated fields, got {len(fields)}"
            )
        for name, value in zip(names, fields, strict=False):
            cols[name].append(value)
    return cols


def load_items(path: Path) -> list[ItemRecord]:
    """A MovieLens-style ``.item`` file: id, title, release year, space-separated genres."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"item file {path} does not exist; {HINT}")
    cols = _read_atomic(path, ["item_id", "movie_title"])
    n = len(cols["item_id"])
    years = cols.get("release_year", [""] * n)
    genres = cols.get("class", [""] * n)
    items = []
    for item_id, title, year, cls in zip(
        cols["item_id"], cols["movie_title"], years, genres, strict=False
    ):
        cats = [g for g in cls.split() if g not in _NO_GENRE]
        items.append(ItemRecord(item_id, title.strip(), cats, 0.0, {"year": _year(year)}))
    if len({i.item_id for i in items}) != len(items):
        raise DataError(f"{path} repeats item ids")
    return items


def _year(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


def load_movielens(data_dir: Path) -> tuple[Interactions, list[ItemRecord]]:
    """Ratings as ``rating`` events plus the catalogue, from ``data_dir/*.inter`` and ``*.item``."""
    inter_path = find_file(data_dir, "inter")
    items = load_items(find_file(data_dir, "item"))
    cols = _read_atomic(inter_path, ["user_id", "item_id", "timestamp"])
    try:
        ts = np.asarray(cols["timestamp"], dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{inter_path}: non-numeric timestamp ({e}); {HINT}") from None
    if len(ts) == 0:
        raise DataError(f"{inter_path} has no interactions; {HINT}")
    inter = Interactions.from_arrays(
        cols["user_id"], cols["item_id"], ts, np.full(len(ts), "rating", dtype=object)
    )
    return inter, items


# --- The product's event log (JSON lines) -------------------------------------


def load_jsonl_events(
    path: Path,
    event_types: Iterable[str],
    items: list[ItemRecord] | None = None,
    max_report: int = 20,
) -> tuple[Interactions, list[ItemRecord], list[tuple[int, str]]]:
    """Events as the API accepts them, one JSON object per line.

    Every line goes through the same decoder and validator as the live path, so training
    sees what the dataflow would have folded. Rejected lines are returned as
    ``(line number, reason)`` and summarised in one ``InvalidEventsWarning``. Without an
    item catalogue, items get a bare record (title = id) so the log still trains.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event log {path} does not exist; pass an existing --events-jsonl")
    accepted = frozenset(event_types)
    users: list[str] = []
    item_ids: list[str] = []
    times: list[float] = []
    types: list[str] = []
    invalid: list[tuple[int, str]] = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                ev = validate(
                    decode(raw), accepted, now=math.inf, max_future_seconds=math.inf, min_ts=0.0
                )
            except InvalidEvent as e:
                invalid.append((n, str(e)))
                continue
            users.append(ev.user_id)
            item_ids.append(ev.item_id)
            times.append(ev.ts)
            types.append(ev.event_type)
    if invalid:
        shown = "; ".join(f"line {n}: {why}" for n, why in invalid[:max_report])
        more = f" (and {len(invalid) - max_report} more)" if len(invalid) > max_report else ""
        warnings.warn(
            f"{path}: skipped {len(invalid)} invalid line(s) of {len(invalid) + len(times)}: "
            f"{shown}{more}",
            InvalidEventsWarning,
            stacklevel=2,
        )
    if not times:
        raise DataError(f"{path} has no valid events ({len(invalid)} invalid lines)")
    inter = Interactions.from_arrays(users, item_ids, times, types)
    if items is None:
        items = [ItemRecord(i, i, [], 0.0, {"year": None}) for i in sorted(set(item_ids))]
    return inter, items, invalid


# --- Time ---------------------------------------------------------------------


def parse_time(value: str | float) -> float:
    """Unix seconds from a number or an ISO-8601 time that carries its timezone."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither unix seconds nor an ISO-8601 time") from None
    if dt.tzinfo is None:
        raise ValueError(f"{value!r} has no timezone; write e.g. 1998-03-01T00:00:00Z")
    return dt.timestamp()


def before(inter: Interactions, until_ts: float | None) -> Interactions:
    """Only events strictly before ``until_ts`` (all of them when it is None)."""
    return inter if until_ts is None else inter.take(inter.ts < until_ts)


def quantile_time(inter: Interactions, q: float) -> float:
    """The time below which a share ``q`` of the events fall."""
    if not len(inter):
        raise ValueError("no events to take a time quantile of")
    return float(np.quantile(inter.ts, q))


def temporal_split(inter: Interactions, cutoff_ts: float) -> tuple[Interactions, Interactions]:
    """Events before ``cutoff_ts`` to learn from, events at or after it to evaluate on."""
    train = inter.ts < cutoff_ts
    return inter.take(train), inter.take(~train)


# --- Slicing and provenance ---------------------------------------------------


def restrict(
    inter: Interactions,
    items: list[ItemRecord],
    max_users: int | None = None,
    max_items: int | None = None,
) -> tuple[Interactions, list[ItemRecord], int]:
    """Keep events on catalogue items, optionally a deterministic small slice.

    The slice takes the ``max_items`` most frequent items (ties by id) and then the first
    ``max_users`` user ids in sorted order. Returns how many events referenced items
    missing from the catalogue: the dataflow gives those no vector, so training drops them.
    """
    known = member_of(inter.item_ids, [i.item_id for i in items])
    unknown = int((~known).sum())
    inter = inter.take(known)
    if max_items is not None:
        ids, counts = np.unique(inter.item_ids, return_counts=True)
        keep = ids[np.lexsort((ids, -counts))][:max_items]
        inter = inter.take(member_of(inter.item_ids, keep.tolist()))
        kept = set(keep.tolist())
        items = [i for i in items if i.item_id in kept]
    if max_users is not None:
        keep = np.unique(inter.user_ids)[:max_users]
        inter = inter.take(member_of(inter.user_ids, keep.tolist()))
    return inter, items, unknown


def fingerprint(paths: Sequence[Path], extra: dict[str, Any]) -> dict[str, Any]:
    """What went in: each input file's sha256 and size, plus caller facts (rows, times)."""
    files = []
    for p in paths:
        p = Path(p)
        h = hashlib.sha256()
        lines = 0
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                lines += chunk.count(b"\n")
        files.append(
            {
                "path": str(p.resolve()),
                "sha256": h.hexdigest(),
                "bytes": p.stat().st_size,
                "lines": lines,
            }
        )
    return {"files": files, **extra}


def describe(inter: Interactions) -> dict[str, Any]:
    """Row count and time range, for fingerprints and logs."""
    rng = inter.time_range()
    return {
        "events": len(inter),
        "users": len(np.unique(inter.user_ids)) if len(inter) else 0,
        "items": len(np.unique(inter.item_ids)) if len(inter) else 0,
        "time_min": iso(rng[0]) if rng else None,
        "time_max": iso(rng[1]) if rng else None,
    }


def member_of(values: np.ndarray, keep: Iterable[str]) -> np.ndarray:
    """Boolean mask: which of ``values`` (ids, an object array) are in ``keep``. A set
    lookup per value: ``np.isin`` on object arrays took minutes for MovieLens 100K."""
    wanted = set(keep)
    return np.fromiter((v in wanted for v in values.tolist()), dtype=bool, count=len(values))


def index_of(values: np.ndarray, vocabulary: Sequence[str]) -> np.ndarray:
    """Row of each value in ``vocabulary`` (-1 when absent), vectorised over unique values."""
    position = {v: i for i, v in enumerate(vocabulary)}
    uniq, inverse = np.unique(values, return_inverse=True)
    rows = np.array([position.get(u, -1) for u in uniq], dtype=np.int64)
    return rows[inverse.reshape(-1)] if len(uniq) else np.zeros(0, dtype=np.int64)
