"""The per-item decayed count of recent events (trending), one micro-batch at a time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from core.fold import decayed_add
from core.settings import Settings
from core.state import Trend
from dataflow import metrics
from dataflow.incarnation import Incarnation
from dataflow.parsing import Accepted


class StoredTrends(Protocol):
    """Where an item's count is read back from when the flow does not hold it."""

    def read_trends(self, item_ids: Sequence[str]) -> dict[str, Trend]: ...


class TrendFolder:
    """Per-item decayed count of a micro-batch (the ``count_item`` step's logic)."""

    def __init__(
        self, settings: Settings, store: StoredTrends, incarnation: Incarnation | None = None
    ) -> None:
        self._store = store
        self._incarnation = incarnation or Incarnation()
        self.log_id = self._incarnation.log_id
        self._half_life = settings.fold.trending_half_life_seconds
        self._weights = dict(settings.fold.event_weights)
        self.metrics = metrics.StepMetrics("item")
        self.check_every: float | None = None

    def load(self, first: Accepted) -> Trend:
        item_id = first.event.item_id
        return self._store.read_trends([item_id]).get(item_id) or Trend(item_id, 0.0, -math.inf)

    @staticmethod
    def resume(snapshot: bytes) -> Trend:
        return Trend.from_snapshot(snapshot)

    def migrate(self, t: Trend) -> bool:
        return False  # counts do not live in an item space

    def fold(self, t: Trend, batch: list[Accepted]) -> bool:
        """Add ``batch`` (one item's events) to ``t`` in place; False if all were replays."""
        if t.log_id != self.log_id:
            self._incarnation.adopt(t, t.item_id, self.metrics.offsets_reset)
        applied = False
        for acc in batch:
            if acc.offset <= t.offsets.get(acc.partition, -1):
                continue
            ev = acc.event
            if t.ts == -math.inf:
                t.ts = ev.ts
            w = self._weights[ev.event_type]
            t.score, t.ts = decayed_add(t.score, t.ts, w, ev.ts, self._half_life)
            t.offsets[acc.partition] = acc.offset
            applied = True
        return applied
