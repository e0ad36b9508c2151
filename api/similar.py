"""Items similar to one item: the nearest items to its vector (ANN on the live model's
item collection) blended with the items picked right before or after it in training
(co-visitation, published with the model). HTTP-free.

score = cosine(item, other) + ``ranking.similar_weight_covisit`` * co-visitation weight
(0..1; 0 for items never co-visited). Each result names the larger of the two terms as
its reason. The request's filters hold for both sources, as they do for recommendations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from api.service import Recommender, UnknownCategory
from core.catalog import Catalog
from core.records import ItemRecord
from featurestore.backend import ItemFilter


class UnknownItem(LookupError):
    """The item is in neither the live model's catalogue nor its item collection."""


@dataclass(frozen=True, slots=True)
class Similar:
    row: int
    score: float
    similarity: float
    """Cosine of the two items' vectors."""
    covisit: float
    """Co-visitation weight in training (0..1; 0: never picked together)."""
    reason: str


@dataclass(frozen=True, slots=True)
class SimilarResult:
    item: ItemRecord
    catalog: Catalog
    items: list[Similar]


def similar_items(
    recommender: Recommender, item_id: str, k: int, item_filter: ItemFilter | None = None
) -> SimilarResult:
    """The ``k`` items most similar to ``item_id`` that ``item_filter`` allows, best
    first, never the item itself. ``UnknownItem`` if the live model lacks it."""
    catalog = recommender.catalog()
    if item_filter:
        _check_categories(catalog, item_filter)
    item, row, vector = _lookup(recommender, catalog, item_id)
    exclude = ([] if row is None else [row]) + catalog.tombstones.tolist()
    # An item outside the ANN's top k can only rise above it by its co-visitation term,
    # and co-visited items are scored apart: k would do; twice k leaves room for points
    # the in-memory catalogue does not hold yet (skipped below).
    n = 2 * k
    ann = dict(recommender.store.search_items(catalog.version, vector, n, exclude, item_filter))
    covisit = _covisited(catalog, row, item_filter)
    for r in covisit.keys() - ann.keys():
        ann[r] = float(catalog.vectors[r] @ vector)
    weight = recommender.settings.ranking.similar_weight_covisit
    scored = []
    for r, sim in ann.items():
        if r >= len(catalog.items) or r == row:
            continue  # a point the in-memory catalogue does not hold yet; the item itself
        cov = covisit.get(r, 0.0)
        scored.append(Similar(r, sim + weight * cov, sim, cov, _reason(sim, weight * cov, item)))
    scored.sort(key=lambda s: (-s.score, s.row))
    return SimilarResult(item, catalog, scored[:k])


def _lookup(
    recommender: Recommender, catalog: Catalog, item_id: str
) -> tuple[ItemRecord, int | None, np.ndarray]:
    """The item, its catalogue row (None for an item the store holds but this process's
    catalogue does not yet) and its vector."""
    row = catalog.index.get(item_id)
    if row is not None:
        return catalog.items[row], row, catalog.vectors[row]
    stored = recommender.store.read_item(catalog.version, item_id)
    if stored is None:
        raise UnknownItem(f"item {item_id!r} is not in model {catalog.version}")
    return stored[0], None, stored[1]


def _covisited(
    catalog: Catalog, row: int | None, item_filter: ItemFilter | None
) -> dict[int, float]:
    """Row -> co-visitation weight of the items picked with ``row`` in training that the
    filter allows."""
    nbrs = catalog.covisit.get(row) if row is not None else None
    if nbrs is None:
        return {}
    rows, weights = nbrs
    allowed = _allowed(catalog, rows, item_filter)
    return {
        int(r): float(w) for r, w, ok in zip(rows, weights, allowed, strict=True) if ok and r != row
    }


def _allowed(catalog: Catalog, rows: np.ndarray, item_filter: ItemFilter | None) -> np.ndarray:
    """(len(rows),) bool: the rows the filter lets through, by the catalogue's categories
    and availability (the rules the store applies inside the ANN search)."""
    ok = np.ones(len(rows), dtype=bool)
    if not item_filter:
        return ok
    col = catalog.category_column
    cats = catalog.category_matrix[rows]
    if item_filter.include_categories:
        ok &= cats[:, [col[c] for c in item_filter.include_categories]].any(axis=1)
    if item_filter.exclude_categories:
        ok &= ~cats[:, [col[c] for c in item_filter.exclude_categories]].any(axis=1)
    if item_filter.available_only:
        ok &= catalog.available[rows]
    return ok


def _check_categories(catalog: Catalog, f: ItemFilter) -> None:
    unknown = sorted(
        (set(f.include_categories) | set(f.exclude_categories)) - set(catalog.category_names)
    )
    if unknown:
        raise UnknownCategory(
            f"unknown categories {unknown} in model {catalog.version}; "
            f"known: {catalog.category_names[:50]}"
        )


def _reason(similarity: float, covisit: float, item: ItemRecord) -> str:
    """The larger term, in words."""
    if covisit > 0 and covisit >= similarity:
        return f"often picked with {item.title}"
    return f"similar to {item.title}"
