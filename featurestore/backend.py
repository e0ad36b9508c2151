"""The small surface each Qdrant adapter implements; everything else is shared."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from featurestore.layout import CollectionSpec


class StoreError(RuntimeError):
    """A feature-store problem with a message an operator can act on."""


class StoreLocked(StoreError):
    """The embedded store is open in another process."""


@dataclass(slots=True)
class StoredPoint:
    id: int | str
    """Integers stay integers; UUIDs come back as strings."""
    payload: dict[str, Any]
    vector: list[float] | None = None
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """Request-time business rules on item payloads, applied inside the ANN search
    (Qdrant filter on indexed payload fields), so a filter never starves the candidates."""

    include_categories: tuple[str, ...] = ()
    """Keep items in at least one of these categories (empty: no constraint)."""
    exclude_categories: tuple[str, ...] = ()
    """Drop items in any of these categories."""
    available_only: bool = False
    """Drop items whose payload says ``available: false`` (a missing field counts as available)."""

    def __bool__(self) -> bool:
        return bool(self.include_categories or self.exclude_categories or self.available_only)


class Backend(Protocol):
    def list_collections(self) -> set[str]: ...

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create with Dot distance and the spec's payload indexes; no-op if it exists."""

    def collection_dim(self, name: str) -> int: ...

    def drop_collection(self, name: str) -> None: ...

    def upsert(
        self,
        name: str,
        ids: Sequence[int | str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
    ) -> None: ...

    def retrieve(
        self, name: str, ids: Sequence[int | str], with_vectors: bool = False
    ) -> list[StoredPoint]:
        """Points that exist, in no particular order; missing ids are left out."""

    def delete(self, name: str, ids: Sequence[int | str]) -> None:
        """Delete these points; ids that do not exist are ignored. Durable on return."""

    def find(
        self, name: str, key: str, value: str, limit: int = 1, with_vectors: bool = False
    ) -> list[StoredPoint]:
        """Up to ``limit`` points whose keyword payload ``key`` equals ``value`` (``key``
        needs a keyword index)."""

    def search(
        self,
        name: str,
        vector: Sequence[float],
        limit: int,
        exclude_ids: Sequence[int] = (),
        item_filter: ItemFilter | None = None,
    ) -> list[tuple[int, float]]:
        """(point id, score) of the nearest by dot product, best first, among points
        passing ``item_filter``; for collections keyed by integer ids (the items'). No
        payload: this is the request path's hot loop, one tuple per hit."""

    def scroll(
        self, name: str, with_vectors: bool = False, batch: int = 1024
    ) -> Iterator[StoredPoint]: ...

    def top_by(self, name: str, key: str, limit: int) -> list[StoredPoint]:
        """Points with the largest numeric payload ``key`` (needs a float index)."""

    def count(self, name: str) -> int: ...

    def optimize(self, name: str) -> None:
        """Build indexes now (HNSW) instead of at first query."""

    def ensure_float_index(self, name: str, key: str) -> None:
        """Index the numeric payload ``key`` (for ``top_by``) if it is not yet."""

    def close(self) -> None: ...
