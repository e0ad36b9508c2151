"""The held-out check at the end of training: does the model rank what users did next,
after the split?

Protocol, the same for the model and the popularity baseline: a user counts if they have
held-out events and at least one training event; their vector is the served profile of
their training history frozen at the split; all items are ranked except those they saw
in training; relevant = their held-out items not seen in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from core.records import UserHead
from training.data import Interactions, index_of, member_of
from training.profiles import pooled_histories, user_vectors
from training.quality import aggregate


def holdout_check(
    train: Interactions,
    test: Interactions,
    item_ids: list[str],
    item_vectors: np.ndarray,
    head: UserHead,
    event_weights: Mapping[str, float],
    half_life: float,
    ks: tuple[int, ...] = (10, 20),
    recent_days: float = 30.0,
) -> dict[str, Any]:
    """Ranking quality of the model and of popularity, plus who was (not) evaluated."""
    test_rows, train_rows = index_of(test.item_ids, item_ids), index_of(train.item_ids, item_ids)
    test_users = np.unique(test.user_ids)
    users, pooled = pooled_histories(train, item_ids, item_vectors, event_weights, half_life)
    users_mask = member_of(users, test_users.tolist())
    users, pooled = users[users_mask], pooled[users_mask]

    # Seen-in-training mask, and relevant sets, per evaluated user.
    slot = {u: r for r, u in enumerate(users.tolist())}
    seen = np.zeros((len(users), len(item_ids)), dtype=bool)
    for u, i in zip(train.user_ids.tolist(), train_rows.tolist(), strict=False):
        if u in slot and i >= 0:
            seen[slot[u], i] = True
    relevant: list[set[int]] = [set() for _ in users]
    for u, i in zip(test.user_ids.tolist(), test_rows.tolist(), strict=False):
        if u in slot and i >= 0 and not seen[slot[u], i]:
            relevant[slot[u]].add(i)

    k_max = max(ks)
    model_scores = user_vectors(head, pooled) @ item_vectors.T
    counts = np.bincount(train_rows[train_rows >= 0], minlength=len(item_ids)).astype(float)
    recent = train_rows[(train.ts >= train.ts[-1] - recent_days * 86400.0) & (train_rows >= 0)]
    recent_counts = np.bincount(recent, minlength=len(item_ids)).astype(float)
    model = aggregate(_top_k(model_scores, seen, k_max), relevant, ks)
    popularity = aggregate(_top_k(np.broadcast_to(counts, seen.shape), seen, k_max), relevant, ks)
    popularity_recent = aggregate(
        _top_k(np.broadcast_to(recent_counts, seen.shape), seen, k_max), relevant, ks
    )
    return {
        **{k: v for k, v in model.items() if k != "users"},
        "users_evaluated": model["users"],
        "users_in_holdout": len(test_users),
        "users_in_holdout_without_training_history": int(len(test_users) - len(users)),
        "holdout_events": len(test),
        "popularity": {k: v for k, v in popularity.items() if k != "users"},
        # Context, not a rival the two-tower model is built to beat alone: it measures how
        # much the held-out period is driven by what was trending just before the split.
        f"popularity_last_{recent_days:g}_days": {
            k: v for k, v in popularity_recent.items() if k != "users"
        },
        "protocol": (
            "users with held-out events and >=1 training event; user vector = served "
            "profile of training history frozen at the split; rank all items except those "
            "seen in training; relevant = held-out items not seen in training"
        ),
    }


def _top_k(scores: np.ndarray, exclude: np.ndarray, k: int) -> list[np.ndarray]:
    """Best k item rows per user, excluded items never ranked; ties by catalogue order."""
    masked = np.where(exclude, -np.inf, scores)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    return [row[~exclude[u, row]] for u, row in enumerate(order)]
