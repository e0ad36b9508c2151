"""The evaluation protocol's split: a global temporal cutoff, a validation slice just
before it for tuning, and a seeded set of items held out of training entirely."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.records import ItemRecord
from training.data import Interactions, member_of, quantile_time


@dataclass(frozen=True, slots=True)
class Split:
    train: Interactions
    """Events before the cutoff, minus those on cold items."""
    test: Interactions
    """Every event at or after the cutoff (cold items included)."""
    cutoff: float
    cold_items: frozenset[str]

    def validation(self, share: float) -> Split:
        """The same protocol inside the training period: the last ``share`` of its events
        become the test slice. Tuning happens here, never on the test period."""
        start = quantile_time(self.train, 1.0 - share)
        before = self.train.ts < start
        return Split(self.train.take(before), self.train.take(~before), start, self.cold_items)


def temporal_split(
    inter: Interactions,
    items: list[ItemRecord],
    cutoff_quantile: float,
    cold_share: float,
    seed: int,
) -> Split:
    cutoff = quantile_time(inter, cutoff_quantile)
    rng = np.random.default_rng([seed, 7])
    ids = np.array(sorted(i.item_id for i in items), dtype=object)
    cold = frozenset(rng.choice(ids, round(cold_share * len(ids)), replace=False).tolist())
    before = inter.ts < cutoff
    on_cold = member_of(inter.item_ids, cold)
    return Split(inter.take(before & ~on_cold), inter.take(~before), cutoff, cold)
