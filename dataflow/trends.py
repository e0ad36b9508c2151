"""The per-item decayed count of recent events (trending), one micro-batch at a time.

Two rules keep "trending now" honest: events on items the active model does not know are
not counted at all (any string can be an item id, and one made-up id must not outscore
the catalogue), and an item is listed only once ``fold.trending_min_users`` distinct users
had an event on it since it last went one trending half-life without any (one user's
burst is not a trend). Until then the item keeps the CRC-32 hashes of its distinct users
(fewer than that many); once it is trending, an event costs one comparison more than a
plain count.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Protocol

from core.catalog import CatalogProvider
from core.fold import decayed_add
from core.settings import Settings
from core.state import Trend
from dataflow import metrics
from dataflow.incarnation import Incarnation
from dataflow.parsing import Accepted
from dataflow.users import MODEL_CHECK_SECONDS


class StoredTrends(Protocol):
    """Where an item's count is read back from when the flow does not hold it."""

    def read_trends(self, item_ids: Sequence[str]) -> dict[str, Trend]: ...


class TrendFolder:
    """Per-item decayed count of a micro-batch (the ``count_item`` step's logic)."""

    def __init__(
        self,
        settings: Settings,
        store: StoredTrends,
        catalogs: CatalogProvider,
        incarnation: Incarnation | None = None,
    ) -> None:
        self._store = store
        self._catalogs = catalogs
        self._incarnation = incarnation or Incarnation()
        self.log_id = self._incarnation.log_id
        self._half_life = settings.fold.trending_half_life_seconds
        self._min_users = settings.fold.trending_min_users
        self._weights = dict(settings.fold.event_weights)
        self.metrics = metrics.StepMetrics("item")
        self.check_every: float | None = None

    @staticmethod
    def key(value: Accepted) -> str:
        return value.event.item_id

    def load(self, firsts: list[Accepted]) -> list[Trend]:
        items = [f.event.item_id for f in firsts]
        stored = self._store.read_trends(items)
        return [stored.get(i) or Trend(i, 0.0, -math.inf, trending=False) for i in items]

    @staticmethod
    def resume(snapshot: bytes) -> Trend:
        return Trend.from_snapshot(snapshot)

    @staticmethod
    def active_version() -> str | None:
        return None  # counts do not live in an item space

    def migrate(self, t: Trend) -> bool:
        return False

    def fold(self, t: Trend, batch: list[Accepted]) -> bool:
        """Add ``batch`` (one item's events) to ``t`` in place; False if nothing counted
        (all replays, or an item the active model does not know)."""
        # ``current`` is kept fresh by the user fold; read it, unless nothing is loaded yet.
        catalog = self._catalogs.current or self._catalogs.maybe_refresh(MODEL_CHECK_SECONDS)
        if catalog is None or t.item_id not in catalog.index:
            return False
        if t.log_id != self.log_id:
            self._incarnation.adopt(t, t.item_id, self.metrics.offsets_reset)
        applied = False
        half_life = self._half_life
        for acc in batch:
            if acc.offset <= t.offsets.get(acc.partition, -1):
                continue
            ev = acc.event
            if t.ts == -math.inf:
                t.ts = ev.ts
            elif ev.ts - t.ts > half_life:  # quiet for a half-life: a new crowd must gather
                t.users = []
                t.trending = False
            w = self._weights[ev.event_type]
            t.score, t.ts = decayed_add(t.score, t.ts, w, ev.ts, half_life)
            t.offsets[acc.partition] = acc.offset
            if not t.trending:
                self._count_user(t, ev.user_id)
            applied = True
        return applied

    def _count_user(self, t: Trend, user_id: str) -> None:
        h = zlib.crc32(user_id.encode())
        if h not in t.users:
            t.users.append(h)
            t.trending = len(t.users) >= self._min_users
