"""Held-out items enter the product's catalogue at their first event, as a catalogue
write: before anyone is recommended anything for that event, the item's ``Upsert``
(title, categories, year) is applied by the dataflow's own ``CatalogWriter``, which
embeds it with the model's item tower and writes the store, and the in-memory
catalogue picks up the new row. Until then the product cannot know the item exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import encoder
from core.items import Upsert, item_text
from core.records import ItemRecord


def upsert_of(item: ItemRecord) -> Upsert:
    """The write a catalogue owner would send for ``item`` (``POST /items``)."""
    year = item.extra.get("year")
    return Upsert(
        item_id=item.item_id,
        title=item.title,
        categories=list(item.categories),
        attributes={} if year is None else {"year": year},
    )


class TextVectors:
    """The text encoder for the replay: the vectors the encoder gave these items' texts
    (training's cache) looked up by text, the encoder itself for any other text."""

    def __init__(self, items: Sequence[ItemRecord], vectors: np.ndarray | None) -> None:
        known = [] if vectors is None else list(zip(items, vectors, strict=True))
        self._by_text = {item_text(i): v for i, v in known}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._by_text]
        if missing:
            self._by_text.update(zip(missing, encoder.encode(missing), strict=True))
        return np.stack([self._by_text[t] for t in texts]).astype(np.float32)


class Arrivals:
    """Which held-out items have entered the catalogue; ``due(item_id)`` is the write to
    apply before an event on ``item_id`` (None: the item is known already)."""

    def __init__(self, held_out: Sequence[ItemRecord]) -> None:
        self._pending = {i.item_id: i for i in held_out}

    def due(self, item_id: str) -> Upsert | None:
        item = self._pending.pop(item_id, None)
        return None if item is None else upsert_of(item)

    def __len__(self) -> int:
        return len(self._pending)
