"""Top-k ranking quality in plain numpy, so any ranker (model or baseline) is scored alike.

``ranked`` is a user's ranking, best first; ``relevant`` the items they went on to use.
Each function scores one user; ``aggregate`` averages over users.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np


def _hits(ranked: Sequence[Any] | np.ndarray, relevant: Collection[Any], k: int) -> np.ndarray:
    """1.0 where the i-th of the top k is relevant; duplicates in ``ranked`` count once."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    seen: set[Any] = set()
    hits = []
    for r in list(ranked)[:k]:
        hits.append(1.0 if r in relevant and r not in seen else 0.0)
        seen.add(r)
    return np.asarray(hits, dtype=np.float64)


def recall_at_k(ranked: Sequence[Any] | np.ndarray, relevant: Collection[Any], k: int) -> float:
    """|top-k ∩ relevant| / |relevant| (0 when nothing is relevant)."""
    if not relevant:
        return 0.0
    return float(_hits(ranked, relevant, k).sum() / len(relevant))


def hit_rate_at_k(ranked: Sequence[Any] | np.ndarray, relevant: Collection[Any], k: int) -> float:
    """1 if any of the top k is relevant."""
    return float(_hits(ranked, relevant, k).any())


def mrr_at_k(ranked: Sequence[Any] | np.ndarray, relevant: Collection[Any], k: int) -> float:
    """1 / rank of the first relevant item within the top k, else 0."""
    hits = np.flatnonzero(_hits(ranked, relevant, k))
    return float(1.0 / (hits[0] + 1)) if len(hits) else 0.0


def ndcg_at_k(ranked: Sequence[Any] | np.ndarray, relevant: Collection[Any], k: int) -> float:
    """Binary-gain DCG@k over the best DCG@k achievable with |relevant| items."""
    if not relevant:
        return 0.0
    hits = _hits(ranked, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((hits * discounts[: len(hits)]).sum())
    idcg = float(discounts[: min(k, len(relevant))].sum())
    return dcg / idcg


MEASURES = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
    "mrr": mrr_at_k,
}


def aggregate(
    rankings: Sequence[Sequence[Any] | np.ndarray],
    relevants: Sequence[Collection[Any]],
    ks: Sequence[int] = (10,),
) -> dict[str, float]:
    """Mean of every measure at every k, keyed like ``recall_at_10``; users with no relevant
    items are skipped, and ``users`` says how many were averaged."""
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings for {len(relevants)} relevant sets")
    pairs = [(r, rel) for r, rel in zip(rankings, relevants, strict=False) if rel]
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in MEASURES.items():
            scores = [fn(r, rel, k) for r, rel in pairs]
            out[f"{name}_at_{k}"] = float(np.mean(scores)) if scores else 0.0
    out["users"] = len(pairs)
    return out
