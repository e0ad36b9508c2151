"""Item popularity as published in each item record: log(1 + count) / log(1 + max count)
over the training events, so the most used item scores 1 and unused items 0. Serving's
popularity term reads it from the item payload."""

from __future__ import annotations

import math

import numpy as np

from core.records import ItemRecord
from training.data import Interactions, index_of


def with_popularity(items: list[ItemRecord], train: Interactions) -> list[ItemRecord]:
    """Copies of ``items`` with their popularity over ``train``."""
    counts = np.bincount(index_of(train.item_ids, [i.item_id for i in items]), minlength=len(items))
    top = math.log1p(counts.max()) if len(counts) and counts.max() > 0 else 1.0
    return [
        ItemRecord(i.item_id, i.title, list(i.categories), math.log1p(c) / top, dict(i.extra))
        for i, c in zip(items, counts.tolist(), strict=False)
    ]
