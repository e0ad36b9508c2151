"""Items written at runtime, and their rows in each model version's items collection.

The ``catalog_items`` collection is the runtime catalogue's source of truth, whatever
the model: each item's record, its text vector and its slot. A version's items
collection holds what serving searches: trained rows, then slot rows
(``core.items.place``), and a rows point (``layout.rows_point``) whose revision grows
with every runtime row, so a process holding the catalogue in memory reads only the
rows written since it last looked (``changed_rows``).

Delivery: every write is an upsert by a deterministic id (the item's point, its row),
so writing the same change again, after a crash or by a second writer, leaves the same
state. Slots are handed out under a lock by the one writer the dataflow routes every
catalogue write to; publishing a model writes a version before it serves.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.catalog import Catalog, StaleCatalog
from core.items import CatalogEntry, ItemHead, place
from core.records import ItemRecord
from featurestore import layout as col
from featurestore.backend import Backend, StoredPoint

FULL_RELOAD_ROWS = 10_000
"""Beyond this many rows changed since a catalogue was loaded, reload it whole."""


class RuntimeItems:
    def __init__(self, backend: Backend) -> None:
        self._b = backend
        self._lock = threading.Lock()

    # --- the runtime catalogue ----------------------------------------------------

    def get(self, item_ids: Sequence[str]) -> dict[str, CatalogEntry]:
        if not item_ids or col.CATALOG not in self._b.list_collections():
            return {}
        points = self._b.retrieve(col.CATALOG, [col.item_point(i) for i in item_ids], True)
        entries = (_entry(p) for p in points)
        return {e.record.item_id: e for e in entries}

    def put(self, changes: Sequence[tuple[ItemRecord, np.ndarray]]) -> list[CatalogEntry]:
        """Store the items as changed (record, text vector): an item keeps its slot, a new
        one takes the next; each gets the next revision."""
        if not changes:
            return []
        with self._lock:
            dim = int(changes[0][1].shape[0])
            self._b.create_collection(col.CATALOG, col.spec_for(col.CATALOG, dim))
            slots, rev = self._meta()
            known = self.get([r.item_id for r, _ in changes])
            # A write interrupted between its points and the meta point left items with
            # slots and revisions beyond the meta's: never hand those out again.
            slots = max([slots, *(e.slot + 1 for e in known.values())])
            rev = max(rev, self._top_rev(col.CATALOG))
            entries = []
            for record, text in changes:
                old = known.get(record.item_id)
                if old is None:
                    old = known[record.item_id] = CatalogEntry(record, text, slots)
                    slots += 1
                rev += 1
                entries.append(CatalogEntry(record, text, old.slot, float(rev)))
            self._b.upsert(
                col.CATALOG,
                [col.item_point(e.record.item_id) for e in entries],
                np.stack([e.text_vector for e in entries]),
                [{**e.record.to_payload(""), "slot": e.slot, "rev": e.rev} for e in entries],
            )
            self._b.upsert(
                col.MODELS, [col.CATALOG_META_POINT], [[0.0]], [{"slots": slots, "rev": rev}]
            )
        return entries

    def revision(self) -> float:
        return float(self._meta()[1])

    def since(self, rev: float) -> list[CatalogEntry]:
        """Entries written after revision ``rev``, oldest first."""
        newer = int(self.revision() - rev)
        if newer <= 0:
            return []
        points = self._b.top_by(col.CATALOG, "rev", newer)
        full = self._b.retrieve(col.CATALOG, [p.id for p in points if p.payload["rev"] > rev], True)
        return sorted((_entry(p) for p in full), key=lambda e: e.rev)

    def all(self) -> list[CatalogEntry]:
        if col.CATALOG not in self._b.list_collections():
            return []
        return sorted((_entry(p) for p in self._b.scroll(col.CATALOG, True)), key=lambda e: e.slot)

    def _top_rev(self, name: str) -> int:
        top = self._b.top_by(name, "rev", 1)
        return int(top[0].payload["rev"]) if top else 0

    def _meta(self) -> tuple[int, int]:
        hits = self._b.retrieve(col.MODELS, [col.CATALOG_META_POINT])
        if not hits:
            return 0, 0
        return int(hits[0].payload["slots"]), int(hits[0].payload["rev"])

    # --- a version's rows ----------------------------------------------------------

    def write_rows(
        self,
        version: str,
        entries: Sequence[CatalogEntry],
        trained: Sequence[ItemRecord],
        trained_vectors: np.ndarray,
        head: ItemHead | None,
    ) -> int:
        """Write ``entries`` into ``version``'s items collection (``core.items.place``);
        returns the version's revision after it."""
        rows = place(entries, trained, trained_vectors, head)
        if not rows:
            return self.rows(version)[1]
        name = col.items_collection(version)
        with self._lock:
            self._b.ensure_float_index(name, "rev")
            count, rev = self.rows(version)
            rev = max(rev, self._top_rev(name))  # an interrupted write's rows, see ``put``
            payloads = []
            for _, record, _ in rows:
                rev += 1
                payloads.append({**record.to_payload(version), "rev": float(rev)})
            self._b.upsert(
                name,
                [row + 1 for row, _, _ in rows],
                np.stack([v for _, _, v in rows]).astype(np.float32),
                payloads,
            )
            count = max(count, len(trained), *(row + 1 for row, _, _ in rows))
            self._b.upsert(
                col.MODELS, [col.rows_point(version)], [[0.0]], [{"rows": count, "rev": rev}]
            )
        return rev

    def rows(self, version: str) -> tuple[int, int]:
        """(rows beyond the trained ones included: the collection's row count, revision);
        (0, 0) for a version without runtime rows."""
        hits = self._b.retrieve(col.MODELS, [col.rows_point(version)])
        if not hits:
            return 0, 0
        return int(hits[0].payload["rows"]), int(hits[0].payload["rev"])

    def changed_rows(self, catalog: Catalog) -> Catalog | None:
        """``catalog`` with the rows written since it was loaded; None when nothing
        changed. Raises ``StaleCatalog`` when so much did that reloading it is cheaper."""
        count, rev = self.rows(catalog.version)
        if rev <= catalog.rev:
            return None
        newer = int(rev - catalog.rev)
        if newer > FULL_RELOAD_ROWS:
            raise StaleCatalog(f"{newer} rows changed")
        name = col.items_collection(catalog.version)
        top = self._b.top_by(name, "rev", newer)
        ids = [p.id for p in top if p.payload["rev"] > catalog.rev]
        points = self._b.retrieve(name, ids, with_vectors=True)
        changes = {
            int(p.id) - 1: (ItemRecord.from_payload(_clean(p.payload)), _vec(p)) for p in points
        }
        return catalog.with_rows(changes, count, rev)


def _entry(p: StoredPoint) -> CatalogEntry:
    payload = dict(p.payload)
    slot, rev = int(payload.pop("slot")), float(payload.pop("rev"))
    return CatalogEntry(ItemRecord.from_payload(_clean(payload)), _vec(p), slot, rev)


def _clean(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("rev", "slot")}


def _vec(p: StoredPoint) -> np.ndarray:
    assert p.vector is not None
    return np.asarray(p.vector, dtype=np.float32)
