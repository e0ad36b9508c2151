"""Users' long-term vectors and seen lists, computed the way serving computes them.

A profile is the dataflow's fold over the user's whole history (decayed, weighted sum
of item vectors) passed through the exported numpy ``UserHead`` -- so evaluation, the
published profiles and a live user folded from the same events all agree.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from core.fold import decay_weights
from core.records import UserHead
from training.data import Interactions, index_of

SEEN_CAP = 500
"""Most recent distinct items kept per user in a published seen list."""


def pooled_histories(
    inter: Interactions,
    item_ids: list[str],
    item_vectors: np.ndarray,
    event_weights: Mapping[str, float],
    half_life: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, pooled vectors as of each user's last event) for users with a vector.

    Events on items without a vector add nothing, exactly as in the fold; a user with
    only such events has no vector and gets no row.
    """
    rows = index_of(inter.item_ids, item_ids)
    known = rows >= 0
    inter, rows = inter.take(known), rows[known]
    users, codes = np.unique(inter.user_ids, return_inverse=True)
    codes = codes.reshape(-1)
    last = np.full(len(users), -np.inf)
    np.maximum.at(last, codes, inter.ts)
    w = inter.weights(event_weights) * decay_weights(inter.ts, last[codes], half_life)
    pooled = np.zeros((len(users), item_vectors.shape[1]), dtype=np.float64)
    np.add.at(pooled, codes, w[:, None] * item_vectors[rows].astype(np.float64))
    return users, pooled.astype(np.float32)


def user_vectors(head: UserHead, pooled: np.ndarray) -> np.ndarray:
    """``UserHead.apply`` row by row: the exact function the API runs."""
    out = np.empty_like(pooled, dtype=np.float32)
    for r, p in enumerate(pooled):
        out[r] = head.apply(p)
    return out


def seen_items(inter: Interactions, cap: int = SEEN_CAP) -> dict[str, list[str]]:
    """Each user's distinct items, most recent last, keeping the newest ``cap``."""
    seen: dict[str, dict[str, None]] = {}
    for u, i in zip(inter.user_ids.tolist(), inter.item_ids.tolist(), strict=False):
        items = seen.setdefault(u, {})
        items.pop(i, None)
        items[i] = None
    return {u: list(items)[-cap:] for u, items in sorted(seen.items())}
