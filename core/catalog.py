"""The item catalogue of one model version, held in memory by each process.

The dataflow (folding events) and the API (re-ranking) read item vectors and metadata
from numpy arrays instead of asking the store per event or per candidate. Qdrant stays
the source of truth and does the ANN. A version's trained items never change; runtime
catalogue writes add and change rows after them, which ``CatalogProvider`` picks up by
revision, swapping in a new ``Catalog`` so a reader never sees a half-applied change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.items import TOMBSTONE
from core.records import ItemRecord, UserHead

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Catalog:
    version: str
    items: list[ItemRecord]
    vectors: np.ndarray
    """(n_items, dim) float32, L2-normalised."""
    head: UserHead
    rev: float = 0.0
    """The version's runtime revision these rows include (0: trained rows only)."""
    trained: int = -1
    """Rows from training (the rest came from catalogue writes); -1: all of them."""
    index: dict[str, int] = field(init=False)
    popularity: np.ndarray = field(init=False)
    category_names: list[str] = field(init=False)
    category_column: dict[str, int] = field(init=False)
    """Category name -> its column in ``category_matrix``."""
    category_matrix: np.ndarray = field(init=False)
    """(n_items, n_categories) multi-hot, for vectorised category features."""
    available: np.ndarray = field(init=False)
    """(n_items,) bool: the ``available`` payload flag at load time (missing: True)."""
    all_available: bool = field(init=False)
    """Every item is available: an ``available_only`` filter drops nothing (read per
    request, so computed once here)."""
    tombstones: np.ndarray = field(init=False)
    """Rows no request may return (placeholders, see ``core.items.TOMBSTONE``)."""
    covisit: dict[int, tuple[np.ndarray, np.ndarray]] = field(init=False)
    """Row -> (neighbour rows, weights in (0, 1]): items picked right before/after it in
    training, published by training in each item's ``extra["covisit"]``."""

    def __post_init__(self) -> None:
        if self.trained < 0:
            self.trained = len(self.items)
        # A tombstone (id "") fills the slot row of an item the version has trained.
        self.index = {it.item_id: i for i, it in enumerate(self.items) if it.item_id}
        self.tombstones = np.fromiter(
            (i for i in range(self.trained, len(self.items)) if not self.items[i].item_id),
            dtype=np.int32,
        )
        self.popularity = np.array([it.popularity for it in self.items], dtype=np.float32)
        self.category_names = sorted({c for it in self.items for c in it.categories})
        self.category_column = col = {c: j for j, c in enumerate(self.category_names)}
        self.category_matrix = np.zeros((len(self.items), len(col)), dtype=np.float32)
        for i, it in enumerate(self.items):
            for c in it.categories:
                self.category_matrix[i, col[c]] = 1.0
        self.available = np.array(
            [it.extra.get("available", True) is not False for it in self.items], dtype=bool
        )
        self.all_available = bool(self.available.all())
        self.covisit = {}
        for i, it in enumerate(self.items):
            pairs = [
                (self.index[j], w) for j, w in it.extra.get("covisit") or () if j in self.index
            ]
            if pairs:
                self.covisit[i] = (
                    np.array([r for r, _ in pairs], dtype=np.int64),
                    np.array([w for _, w in pairs], dtype=np.float32),
                )

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def with_rows(
        self, changes: Mapping[int, tuple[ItemRecord, np.ndarray]], rows: int, rev: float
    ) -> Catalog:
        """A new catalogue with ``changes`` (row -> record, vector) applied and ``rows``
        rows in all; this one stays as it was for readers still holding it."""
        rows = max(rows, len(self.items), *(r + 1 for r in changes))
        items = list(self.items) + [TOMBSTONE] * (rows - len(self.items))
        vectors = np.zeros((rows, self.dim), dtype=np.float32)
        vectors[: len(self.items)] = self.vectors
        for row, (record, vector) in changes.items():
            items[row] = record
            vectors[row] = vector
        return Catalog(self.version, items, vectors, self.head, rev, self.trained)

    def vector(self, item_id: str) -> np.ndarray | None:
        i = self.index.get(item_id)
        return None if i is None else self.vectors[i]

    def categories(self, item_id: str) -> list[str]:
        i = self.index.get(item_id)
        return [] if i is None else self.items[i].categories

    def title(self, item_id: str) -> str:
        i = self.index.get(item_id)
        return item_id if i is None else self.items[i].title


class StaleCatalog(Exception):
    """So many rows changed that the catalogue is better loaded whole."""


class CatalogProvider:
    """Follows the store's active model version; ``current`` is a plain attribute read.

    ``refresh`` is cheap when nothing changed (one point lookup), so callers may call
    it often; a new version is loaded fully before it replaces the old one, so readers
    never see a half-loaded catalogue.
    """

    def __init__(
        self,
        load_active: Callable[[], str | None],
        load: Callable[[str], Catalog],
        update: Callable[[Catalog], Catalog | None] | None = None,
    ):
        """``update(catalog)``: the catalogue with the rows written since, None when none
        were; it may raise ``StaleCatalog`` when loading it whole is cheaper."""
        self._load_active = load_active
        self._load = load
        self._update = update
        self._lock = threading.Lock()
        self.current: Catalog | None = None
        self._next_check = 0.0

    def refresh(self) -> Catalog | None:
        with self._lock:
            version = self._load_active()
            if version is not None and (self.current is None or self.current.version != version):
                t0 = time.perf_counter()
                self.current = self._load(version)
                log.info(
                    "model %s loaded: %d items in %.2fs",
                    version,
                    len(self.current.items),
                    time.perf_counter() - t0,
                )
            elif self.current is not None and self._update is not None:
                try:
                    updated = self._update(self.current)
                except StaleCatalog:
                    updated = self._load(self.current.version)
                if updated is not None:
                    self.current = updated
            return self.current

    def maybe_refresh(self, every: float) -> Catalog | None:
        """Refresh at most once per ``every`` seconds; for hot loops."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + every
            return self.refresh()
        return self.current


def row_map(old_item_ids: Sequence[str], new_index: Mapping[str, int]) -> np.ndarray:
    """(len(old_item_ids),) int32: each row of an old catalogue's row in a new one, or -1
    for items the new catalogue lacks."""
    return np.fromiter(
        (new_index.get(i, -1) for i in old_item_ids), dtype=np.int32, count=len(old_item_ids)
    )


class RowMaps:
    """Old catalogue row -> new catalogue row for pairs of model versions (``row_map``),
    so the items users have seen, kept as rows of the version they were folded in, follow
    a model switch (``core.fold.rebuild_vector``). Built once per pair from the old
    version's item ids (``item_ids(version)``, None when that version is gone) and kept
    for the few most recent pairs."""

    KEEP = 4

    def __init__(self, item_ids: Callable[[str], Sequence[str] | None]) -> None:
        self._item_ids = item_ids
        self._maps: dict[tuple[str, str], np.ndarray | None] = {}
        self._lock = threading.Lock()

    def get(self, old_version: str | None, new: Catalog) -> np.ndarray | None:
        """The map from ``old_version``'s rows to ``new``'s; None if that one is unknown."""
        if old_version is None:
            return None
        key = (old_version, new.version)
        try:
            return self._maps[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._maps:
                ids = self._item_ids(old_version)
                while len(self._maps) >= self.KEEP:
                    del self._maps[next(iter(self._maps))]
                self._maps[key] = None if ids is None else row_map(ids, new.index)
            return self._maps[key]
