"""One recommend request: read features, retrieve candidates, re-rank. HTTP-free."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from api.recommend import (
    Ranked,
    RankParams,
    build_query,
    cold_candidates,
    covisit_neighbours,
    diversify,
    rerank,
)
from dataflow.fold import FoldParams, rebuild_vector
from featurestore.catalog import Catalog, CatalogProvider
from featurestore.schemas import UserState
from featurestore.settings import Settings
from featurestore.store import FeatureStore

TRENDING_TOP = 100
TRENDING_CACHE_SECONDS = 1.0


class NoModel(RuntimeError):
    """No model version is published yet, so there is no item space to recommend from."""


@dataclass(slots=True)
class Result:
    user_id: str
    catalog: Catalog
    items: list[Ranked]
    strategy: str
    realtime_weight: float
    candidates: int


class Recommender:
    def __init__(self, settings: Settings, store: FeatureStore, catalogs: CatalogProvider) -> None:
        self.settings = settings
        self.store = store
        self.catalogs = catalogs
        self.rank_params = RankParams(
            ann=settings.weight_ann,
            category=settings.weight_category,
            recent=settings.weight_recent,
            popularity=settings.weight_popularity,
            recent_half_life=settings.recent_similarity_half_life_seconds,
            recent_position_decay=settings.recent_position_decay,
            covisit=settings.weight_covisit,
            covisit_items=settings.covisit_items,
            covisit_half_life=settings.covisit_half_life_seconds,
            covisit_position_decay=settings.covisit_position_decay,
            new_item=settings.weight_new_item,
        )
        self._fold = FoldParams.from_settings(settings)
        self._trending: tuple[float, str, dict[int, float]] = (0.0, "", {})
        self._trending_lock = threading.Lock()

    def catalog(self) -> Catalog:
        catalog = self.catalogs.current
        if catalog is None:
            raise NoModel("no model is published yet: train one with `just train`")
        return catalog

    def recommend(
        self, user_id: str, k: int, now: float | None = None, exclude_items: Iterable[str] = ()
    ) -> Result:
        """Top ``k`` for ``user_id``; never items they interacted with recently, items in
        their long-term profile's seen list, or ``exclude_items``."""
        now = time.time() if now is None else now
        catalog = self.catalog()
        s = self.settings
        state = self.store.read_user_state(user_id)
        if state is not None and state.model_version != catalog.version:
            # The dataflow has not moved this user to the new model yet: do it on a copy,
            # so the query never mixes two embedding spaces.
            state = rebuild_vector(_copy(state), catalog.vector, self._fold, catalog.version)
        profile = self.store.read_profile(catalog.version, user_id)
        query = build_query(state, profile, catalog, now, s.half_life_seconds, s.blend_mass)

        seen = {r.item_id for r in state.recent} if state else set()
        seen.update(exclude_items)
        if profile is not None:
            seen.update(profile.seen)
        trending = self.trending(catalog, now)

        if query.vector is None:
            exclude = {catalog.index[i] for i in seen if i in catalog.index}
            candidates = cold_candidates(catalog, trending, exclude, s.candidates)
            strategy = "cold_start"
        else:
            exclude = sorted(catalog.index[i] for i in seen if i in catalog.index)
            candidates = self.store.search_items(
                catalog.version, query.vector, s.candidates, exclude
            )
            strategy = "personalized"
            candidates = self._with_covisit(candidates, catalog, state, query.vector, now, exclude)
        pool = k if s.mmr_lambda >= 1.0 else max(k, s.mmr_pool)
        ranked = rerank(
            candidates, catalog, state, trending, self.rank_params, now, query.realtime_weight, pool
        )
        ranked = diversify(ranked, catalog, s.mmr_lambda, k)
        return Result(user_id, catalog, ranked, strategy, query.realtime_weight, len(candidates))

    def _with_covisit(
        self,
        candidates: list[tuple[int, float]],
        catalog: Catalog,
        state: UserState | None,
        query: np.ndarray,
        now: float,
        exclude: list[int],
    ) -> list[tuple[int, float]]:
        """Add items co-visited with the user's last ones that the ANN did not return,
        scored by the same dot product the ANN uses."""
        n = self.settings.covisit_candidates
        if n <= 0 or not self.rank_params.covisit:
            return candidates
        have = {r for r, _ in candidates} | set(exclude)
        extra = covisit_neighbours(catalog, state, now, self.rank_params, have)[:n]
        if not extra:
            return candidates
        ann = catalog.vectors[extra] @ query
        return candidates + [(r, float(a)) for r, a in zip(extra, ann.tolist(), strict=True)]

    def trending(self, catalog: Catalog, now: float) -> dict[int, float]:
        """Catalogue row -> trending score in [0, 1]; refreshed at most once a second of
        request time (``now``), so a replay at event time sees what live serving saw."""
        at, version, rows = self._trending
        if version == catalog.version and 0.0 <= now - at < TRENDING_CACHE_SECONDS:
            return rows
        with self._trending_lock:
            trends = self.store.top_trends(
                TRENDING_TOP, now, self.settings.trending_half_life_seconds
            )
            top = max((t.score for t in trends), default=0.0)
            rows = {
                catalog.index[t.item_id]: t.score / top
                for t in trends
                if top > 0 and t.item_id in catalog.index
            }
            self._trending = (now, catalog.version, rows)
        return rows


def _copy(state: UserState) -> UserState:
    return UserState.from_payload(
        state.to_payload(), None if state.vector is None else state.vector.tolist()
    )
