"""What a user would get instead: the baselines the product is measured against.

Each baseline sees the same stream as the product: ``recommend`` before an event, then
``observe`` the event. Items are catalogue rows; ``exclude`` holds the rows the user
already interacted with (never recommended, for every system alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from training.covisit import CovisitConfig, covisit_matrix
from training.data import Interactions, index_of


def top_k(scores: np.ndarray, exclude: Sequence[int], k: int) -> list[int]:
    """Best ``k`` rows by score, ties by row; excluded rows never returned."""
    s = scores.astype(np.float64, copy=True)
    if len(exclude):
        s[np.fromiter(exclude, dtype=np.int64)] = -np.inf
    k = min(k, int(np.isfinite(s).sum()))
    if k <= 0:
        return []
    part = np.argpartition(-s, k - 1)[:k]
    order = np.lexsort((part, -s[part]))
    rows: list[int] = part[order].tolist()
    return rows


class Popularity:
    """Most events so far. Counts update prequentially, so items that appear after the
    cutoff (cold items) can climb as soon as users pick them."""

    name = "popularity"

    def __init__(self, train: Interactions, item_ids: list[str]) -> None:
        rows = index_of(train.item_ids, item_ids)
        self.counts = np.bincount(rows[rows >= 0], minlength=len(item_ids)).astype(np.float64)

    def recommend(self, user: str, k: int, exclude: Sequence[int]) -> list[int]:
        return top_k(self.counts, exclude, k)

    def observe(self, user: str, row: int, ts: float) -> None:
        self.counts[row] += 1.0

    def scores(self) -> np.ndarray:
        top = self.counts.max() or 1.0
        return self.counts / top


@dataclass(frozen=True, slots=True)
class KnnConfig:
    last_items: int = 10
    position_decay: float = 0.8
    covisit: CovisitConfig = field(default_factory=CovisitConfig)


class CovisitKnn:
    """Recency-weighted item co-occurrence kNN over the user's last items (a strong session
    baseline): score(i) = sum over the last L items j, newest first, of g^age * S[j, i].
    S is the co-visitation of the training events, frozen at the cutoff; the user's
    history grows with the stream. Users with no history, and ties, fall back to popularity."""

    name = "cooc_knn"

    def __init__(
        self,
        train: Interactions,
        item_ids: list[str],
        popularity: Popularity,
        cfg: KnnConfig | None = None,
    ) -> None:
        self.cfg = cfg = cfg or KnnConfig()
        self.sim: sp.csr_matrix = covisit_matrix(train, item_ids, cfg.covisit)
        self.pop = popularity
        rows = index_of(train.item_ids, item_ids)
        self.history: dict[str, list[int]] = {}
        for u, r in zip(train.user_ids.tolist(), rows.tolist(), strict=True):
            if r >= 0:
                self.history.setdefault(u, []).append(r)

    def recommend(self, user: str, k: int, exclude: Sequence[int]) -> list[int]:
        hist = self.history.get(user, [])[-self.cfg.last_items :]
        scores = 1e-6 * self.pop.scores()
        if hist:
            w = self.cfg.position_decay ** np.arange(len(hist) - 1, -1, -1)
            scores = scores + (self.sim[hist].T @ w).ravel()
        return top_k(scores, exclude, k)

    def observe(self, user: str, row: int, ts: float) -> None:
        self.history.setdefault(user, []).append(row)


@dataclass(frozen=True, slots=True)
class AlsConfig:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15


class Als:
    """Implicit-feedback ALS (the ``implicit`` library), trained on the events before the
    cutoff and frozen there, as a batch recommender is between retrains. Users unknown at
    the cutoff fall back to (prequential) popularity."""

    name = "als"

    def __init__(
        self,
        train: Interactions,
        item_ids: list[str],
        popularity: Popularity,
        seed: int,
        cfg: AlsConfig | None = None,
    ) -> None:
        # Lazy: implicit is heavy and only the ALS baseline needs it.
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        cfg = cfg or AlsConfig()
        rows = index_of(train.item_ids, item_ids)
        keep = rows >= 0
        users, codes = np.unique(train.user_ids[keep], return_inverse=True)
        self.user_index = {u: i for i, u in enumerate(users.tolist())}
        m = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (codes.reshape(-1), rows[keep])),
            shape=(len(users), len(item_ids)),
        )
        m.data[:] = 1.0  # repeated events count once
        with threadpool_limits(1, "blas"):  # implicit warns about (and is slowed by) BLAS threads
            model = AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=cfg.alpha,
                iterations=cfg.iterations,
                random_state=seed,
                num_threads=1,  # fixed, so results repeat
            )
            model.fit(m, show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)
        self.pop = popularity

    def recommend(self, user: str, k: int, exclude: Sequence[int]) -> list[int]:
        u = self.user_index.get(user)
        if u is None:
            return self.pop.recommend(user, k, exclude)
        return top_k(self.item_factors @ self.user_factors[u], exclude, k)

    def observe(self, user: str, row: int, ts: float) -> None:
        pass
