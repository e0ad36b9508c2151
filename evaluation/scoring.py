"""Next-item ranking quality for the prequential replay: one target per evaluated event.
Pure numpy.

``rank`` is the 1-based position of the target in a system's top-k, or 0 when it is not
there. Averaging over events gives HR@k, NDCG@k (one relevant item, so IDCG = 1) and MRR@k.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def rank_of(ranked: Sequence[Any], target: Any, k: int) -> int:
    """1-based position of ``target`` in the first ``k`` of ``ranked``; 0 if absent."""
    for i, r in enumerate(ranked[:k]):
        if r == target:
            return i + 1
    return 0


def hit(rank: int) -> float:
    return 1.0 if rank > 0 else 0.0


def ndcg(rank: int) -> float:
    """1 / log2(rank + 1): DCG of a single relevant item over its ideal DCG of 1."""
    return 1.0 / float(np.log2(rank + 1)) if rank > 0 else 0.0


def reciprocal_rank(rank: int) -> float:
    return 1.0 / rank if rank > 0 else 0.0


def summarize(ranks: Iterable[int]) -> dict[str, float]:
    """HR, NDCG and MRR averaged over events, plus how many events were averaged."""
    r = np.fromiter(ranks, dtype=np.int64)
    if not len(r):
        return {"hr": 0.0, "ndcg": 0.0, "mrr": 0.0, "events": 0}
    pos = r > 0
    gains = np.zeros(len(r))
    gains[pos] = 1.0 / np.log2(r[pos] + 1)
    rr = np.zeros(len(r))
    rr[pos] = 1.0 / r[pos]
    return {
        "hr": float(pos.mean()),
        "ndcg": float(gains.mean()),
        "mrr": float(rr.mean()),
        "events": len(r),
    }


def coverage(recommended: Iterable[Iterable[Any]], catalogue_size: int) -> float:
    """Share of the catalogue that appeared in at least one recommended list."""
    if catalogue_size <= 0:
        raise ValueError("catalogue_size must be positive")
    seen: set[Any] = set()
    for lst in recommended:
        seen.update(lst)
    return len(seen) / catalogue_size


def intra_list_diversity(categories: Sequence[set[str]]) -> float:
    """Mean over pairs of one list of 1 - Jaccard(categories): 0 all alike, 1 disjoint."""
    pairs = [(a, b) for i, a in enumerate(categories) for b in categories[i + 1 :]]
    if not pairs:
        return 0.0
    return float(np.mean([1.0 - len(a & b) / (len(a | b) or 1) for a, b in pairs]))
