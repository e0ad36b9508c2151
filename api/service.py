"""One recommend request: read features, retrieve candidates, re-rank. HTTP-free."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
from prometheus_client import Counter

from core.artifacts import ArtifactError, load_session
from core.catalog import Catalog, CatalogProvider, RowMaps
from core.fold import FoldParams, rebuild_vector
from core.ranking import (
    Query,
    Ranked,
    RankParams,
    build_query,
    covisit_neighbours,
    diversify,
    rerank_rows,
)
from core.records import Profile
from core.session import SessionModel
from core.settings import Settings
from core.state import UserState
from core.variants import bucket, variant_params
from featurestore.backend import ItemFilter
from featurestore.store import FeatureStore

TRENDING_TOP = 100
TRENDING_CACHE_SECONDS = 1.0
OVERFETCH_MAX_EXCLUDED = 50
"""Up to this many excluded rows, the ANN is asked for that many more candidates and
the excluded ones are dropped after; beyond it they are excluded inside the search (a
has-id filter). CPU per search of 300 candidates on the embedded store, 100,000 items
(has-id / over-fetch): 20 excluded 1.0 / 1.0 ms, 50 1.05 / 1.07, 100 1.19 / 1.34, 1,000
1.9 / 4.9, 5,000 7.4 / 25.6; on MovieLens's 1,682 items: 20 0.44 / 0.42, 100 0.68 /
0.82, 700 0.76 / 1.66 (``bench.serving --profile`` times both with 5,000)."""

FEW_EXCLUDED = 200
"""Up to this many rows to leave out (a typical user's), ``_excluded`` sorts them as a
Python set: cheaper than ``np.unique`` at that size, the same rows."""

log = logging.getLogger(__name__)


CACHE = Counter("recsys_cache_total", "Serving caches: hits and misses", ["cache", "result"])
_TRENDING_HIT = CACHE.labels("trending", "hit")
_TRENDING_MISS = CACHE.labels("trending", "miss")


Candidates = tuple[np.ndarray, np.ndarray]
"""A request's candidates: catalogue rows (int64) and their ANN scores (float32), in
the order retrieved."""


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
    variant: str = "default"


class UnknownCategory(ValueError):
    """A filter names a category the live model does not know."""


class SessionModels:
    """Each model version's learned session model, read once from
    ``<model_dir>/<version>/session.npz`` when a request first uses that version (so a
    new version's model arrives with its catalogue). A version without one, or with an
    unreadable one (logged), ranks without the sequence term."""

    KEEP = 2
    """Versions held: the live one and the one before it (requests still on it)."""

    def __init__(self, settings: Settings) -> None:
        self._dir = settings.model_dir
        self._models: dict[str, SessionModel | None] = {}
        self._lock = threading.Lock()

    def get(self, version: str) -> SessionModel | None:
        try:
            return self._models[version]
        except KeyError:
            pass
        with self._lock:
            if version not in self._models:
                self._models[version] = self._load(version)
                for old in list(self._models)[: -self.KEEP]:
                    del self._models[old]
            return self._models[version]

    def _load(self, version: str) -> SessionModel | None:
        if self._dir is None:
            return None
        try:
            model = load_session(self._dir / version)
        except ArtifactError as e:
            log.error("session model of %s not used: %s", version, e)
            return None
        if model is None:
            log.info("model %s has no session model in %s", version, self._dir / version)
        return model


class Recommender:
    def __init__(self, settings: Settings, store: FeatureStore, catalogs: CatalogProvider) -> None:
        self.settings = settings
        self.store = store
        self.catalogs = catalogs
        self.rank_params = RankParams.from_settings(settings.ranking)
        self.variants = variant_params(self.rank_params, settings.ranking.variants)
        self._variant_names = sorted(self.variants)
        self._fold = FoldParams.from_settings(settings)
        self._rows = RowMaps(store.item_ids)
        self._trending: tuple[float, str, dict[int, float]] = (0.0, "", {})
        self._trending_lock = threading.Lock()
        self.sessions = SessionModels(settings)
        self.clock: Callable[[], float] = time.time
        """Request time when a call gives none: the wall clock; a replay of past events
        sets its own (``evaluation.prequential``), so serving sees the time they had."""

    def catalog(self) -> Catalog:
        catalog = self.catalogs.current
        if catalog is None:
            raise NoModel("no model is published yet: train one with `just train`")
        return catalog

    def variant(self, user_id: str) -> str:
        return bucket(user_id, self._variant_names, self.settings.ranking.ab_salt)

    def recommend(
        self,
        user_id: str,
        k: int,
        now: float | None = None,
        *,
        item_filter: ItemFilter | None = None,
        exclude_seen: bool = True,
        exclude_items: Iterable[str] = (),
        variant: str | None = None,
        mmr_lambda: float | None = None,
    ) -> Result:
        """Top ``k`` for ``user_id``, never ``exclude_items`` and, with ``exclude_seen``,
        never an item the user interacted with: every item their state remembers
        (``UserState.seen_rows``, up to ``fold.seen_cap``), their recent items and their
        training history (the long-term profile's ``seen``).

        Everything in one request uses one catalogue (model version): the user's vector is
        rebuilt in its space if the dataflow has not moved them yet, the profile and the
        ANN search read that version's collections, so a model swap mid-request never
        mixes embedding spaces."""
        now = self.clock() if now is None else now
        catalog = self.catalog()
        s = self.settings
        variant = variant or self.variant(user_id)
        params = self.variants[variant]
        if item_filter:
            self._check_categories(catalog, item_filter)
        state = self._user_state(user_id, catalog)
        profile = self.store.read_profile(catalog.version, user_id)
        query = self._query(state, profile, catalog, now)
        seen = _excluded(catalog, exclude_items, state, profile, exclude_seen)
        trending = self.trending(catalog, now)
        if query.vector is None:
            candidates = _cold_candidates(
                catalog, trending, seen, s.ranking.candidates, item_filter
            )
            strategy = "cold_start"
        else:
            candidates = self._personal_candidates(
                catalog, state, query.vector, now, seen, params, item_filter
            )
            strategy = "personalized"
        ranked = self._rank(
            candidates, catalog, state, trending, params, now, query.realtime_weight, k, mmr_lambda
        )
        return Result(
            user_id,
            catalog,
            ranked,
            strategy,
            query.realtime_weight,
            len(candidates[0]),
            variant,
        )

    def _query(
        self, state: UserState | None, profile: Profile | None, catalog: Catalog, now: float
    ) -> Query:
        s = self.settings
        return build_query(
            state,
            profile,
            catalog,
            now,
            s.fold.half_life_seconds,
            s.ranking.blend_mass,
            s.ranking.min_realtime_mass,
        )

    def _rank(
        self,
        candidates: Candidates,
        catalog: Catalog,
        state: UserState | None,
        trending: dict[int, float],
        params: RankParams,
        now: float,
        realtime_weight: float,
        k: int,
        mmr_lambda: float | None,
    ) -> list[Ranked]:
        """The candidates re-ranked; then the top ``k``, diversified by maximal marginal
        relevance from a larger pool unless ``mmr_lambda`` (default: the setting) is 1."""
        mmr = self.settings.ranking.mmr_lambda if mmr_lambda is None else mmr_lambda
        pool = k if mmr >= 1.0 else max(k, self.settings.ranking.mmr_pool)
        sequence = self.sessions.get(catalog.version) if params.weight_sequence else None
        if sequence is not None and sequence.item_emb.shape[0] != catalog.trained:
            # Not this catalogue's trained rows (checked at training; never mix). Rows
            # after them were written at run time: ``sequence_scores`` handles those.
            sequence = None
        rows, ann = candidates
        ranked = rerank_rows(
            rows, ann, catalog, state, trending, params, now, realtime_weight, pool, sequence
        )
        return diversify(ranked, catalog, mmr, k)

    def _user_state(self, user_id: str, catalog: Catalog) -> UserState | None:
        """The user's real-time state, with its vector in ``catalog``'s item space."""
        state = self.store.read_user_state(user_id)
        if state is not None and state.model_version != catalog.version:
            # The dataflow has not moved this user to the new model yet: do it on a copy,
            # so the query never mixes two embedding spaces (nor catalogues' rows).
            seen_map = self._rows.get(state.model_version, catalog) if state.seen_rows else None
            state = rebuild_vector(
                _copy(state), catalog.vector, self._fold, catalog.version, seen_map
            )
        return state

    def _personal_candidates(
        self,
        catalog: Catalog,
        state: UserState | None,
        query: np.ndarray,
        now: float,
        exclude: np.ndarray,
        params: RankParams,
        item_filter: ItemFilter | None,
    ) -> Candidates:
        """The ANN's nearest items to ``query`` that the filter allows, none of the rows
        ``exclude``, plus the items co-visited with the user's last ones."""
        n = self.settings.ranking.candidates
        if item_filter and item_filter.available_only and catalog.all_available:
            # Nothing to drop: the rest of the filter, if it has any.
            categories = item_filter.include_categories or item_filter.exclude_categories
            item_filter = replace(item_filter, available_only=False) if categories else None
        rows_known = len(catalog.items)  # rows written since this catalogue was read wait
        if item_filter or len(exclude) > OVERFETCH_MAX_EXCLUDED:
            rows, ann = self.store.search_item_rows(
                catalog.version, query, n, exclude.tolist(), item_filter
            )
            keep = rows < rows_known
        else:
            # Without a payload filter and with few rows to leave out, asking for
            # len(exclude) more and dropping them afterwards is exact and no dearer.
            rows, ann = self.store.search_item_rows(catalog.version, query, n + len(exclude))
            keep = (rows < rows_known) & ~_among(rows, exclude)
        if not keep.all():
            rows, ann = rows[keep], ann[keep]
        return self._with_covisit(
            (rows[:n], ann[:n]), catalog, state, query, now, exclude, params, item_filter
        )

    @staticmethod
    def _check_categories(catalog: Catalog, f: ItemFilter) -> None:
        if not (f.include_categories or f.exclude_categories):
            return
        known = catalog.category_column
        unknown = sorted((set(f.include_categories) | set(f.exclude_categories)) - known.keys())
        if unknown:
            raise UnknownCategory(
                f"unknown categories {unknown} in model {catalog.version}; "
                f"known: {catalog.category_names[:50]}"
            )

    def _with_covisit(
        self,
        candidates: Candidates,
        catalog: Catalog,
        state: UserState | None,
        query: np.ndarray,
        now: float,
        exclude: np.ndarray,
        params: RankParams,
        item_filter: ItemFilter | None,
    ) -> Candidates:
        """Add items co-visited with the user's last ones that the ANN did not return,
        scored by the same dot product the ANN uses; the request's filter holds for them
        as it does inside the ANN search."""
        n = self.settings.ranking.covisit_candidates
        if n <= 0 or not params.weight_covisit or not catalog.covisit:
            return candidates
        if state is None or not state.recent:
            return candidates
        rows, ann = candidates
        have = set(rows.tolist())
        have.update(exclude.tolist())
        extra = covisit_neighbours(catalog, state, now, params, have)
        if item_filter and extra:
            allowed = _allowed(catalog, item_filter)
            extra = [r for r in extra if allowed[r]]
        extra = extra[:n]
        if not extra:
            return candidates
        extra_ann = (catalog.vectors[extra] @ query).astype(np.float32, copy=False)
        return np.concatenate([rows, np.array(extra, dtype=np.int64)]), np.concatenate(
            [ann, extra_ann]
        )

    def trending(self, catalog: Catalog, now: float) -> dict[int, float]:
        """Catalogue row -> trending score in [0, 1]; refreshed at most once a second of
        request time (``now``), so a replay at event time sees what live serving saw."""
        if not self.settings.fold.trending_enabled:
            return {}  # counts kept before it was turned off are stale: not read
        at, version, rows = self._trending
        if version == catalog.version and 0.0 <= now - at < TRENDING_CACHE_SECONDS:
            _TRENDING_HIT.inc()
            return rows
        _TRENDING_MISS.inc()
        with self._trending_lock:
            trends = self.store.top_trends(
                TRENDING_TOP, now, self.settings.fold.trending_half_life_seconds
            )
            trends = [t for t in trends if t.item_id in catalog.index]
            top = max((t.score for t in trends), default=0.0)
            rows = {catalog.index[t.item_id]: t.score / top for t in trends if top > 0}
            self._trending = (now, catalog.version, rows)
        return rows


def _cold_candidates(
    catalog: Catalog,
    trending: dict[int, float],
    exclude: np.ndarray,
    limit: int,
    item_filter: ItemFilter | None,
) -> Candidates:
    """For users with nothing to go on: trending now, then all-time popular, among the
    items the filter allows and not the rows ``exclude`` (in memory: the catalogue holds
    categories and availability)."""
    score = catalog.popularity.copy()
    if trending:
        rows = np.fromiter(trending.keys(), np.int64, len(trending))
        score[rows] = np.maximum(score[rows], np.fromiter(trending.values(), np.float32))
    allowed = _allowed(catalog, item_filter)
    if len(exclude):
        allowed[exclude] = False
    score[~allowed] = -np.inf
    n = min(limit, int(allowed.sum()))
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    top = np.argpartition(-score, n - 1)[:n]
    top = top[np.lexsort((top, -score[top]))]  # best first; ties by catalogue order
    return top.astype(np.int64, copy=False), np.zeros(n, dtype=np.float32)


def _among(rows: np.ndarray, sorted_rows: np.ndarray) -> np.ndarray:
    """(len(rows),) bool: which of ``rows`` are in ``sorted_rows`` (sorted, distinct)."""
    if not len(sorted_rows):
        return np.zeros(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_rows, rows), len(sorted_rows) - 1)
    return np.asarray(sorted_rows[at] == rows)


def _allowed(catalog: Catalog, item_filter: ItemFilter | None) -> np.ndarray:
    """(n_items,) bool: the items a request's filter lets through, from the catalogue's
    categories and availability (the same rules the store applies inside the ANN)."""
    allowed = np.ones(len(catalog.items), dtype=bool)
    if item_filter:
        col = catalog.category_column
        if item_filter.include_categories:
            cols = [col[c] for c in item_filter.include_categories]
            allowed &= catalog.category_matrix[:, cols].any(axis=1)
        if item_filter.exclude_categories:
            cols = [col[c] for c in item_filter.exclude_categories]
            allowed &= ~catalog.category_matrix[:, cols].any(axis=1)
        if item_filter.available_only:
            allowed &= catalog.available
    return allowed


def _excluded(
    catalog: Catalog,
    exclude_items: Iterable[str],
    state: UserState | None,
    profile: Profile | None,
    exclude_seen: bool,
) -> np.ndarray:
    """The catalogue rows a request leaves out, sorted, distinct: ``exclude_items`` and,
    with ``exclude_seen``, what the user interacted with: the rows their state remembers
    (in ``catalog``'s rows: ``_user_state`` moved them), their recent items (also those
    folded before the state remembered rows) and their training history. Item ids
    outside the catalogue cannot be recommended: nothing to leave out."""
    ids = list(exclude_items)
    parts = []
    if exclude_seen and state is not None:
        ids.extend(r.item_id for r in state.recent)
        if state.seen_rows:
            rows = np.frombuffer(state.seen_rows, np.int32)
            parts.append(rows[rows < len(catalog.items)])
    if exclude_seen and profile is not None:
        ids.extend(profile.seen)
    found = [r for r in map(catalog.index.get, ids) if r is not None]  # one lookup each
    parts.append(np.array(found, dtype=np.int32))
    parts.append(catalog.tombstones)
    if sum(len(p) for p in parts) > FEW_EXCLUDED:
        return np.unique(np.concatenate(parts))
    distinct = set().union(*(p.tolist() for p in parts))  # few: cheaper than np.unique
    return np.array(sorted(distinct), dtype=np.int32)


def _copy(state: UserState) -> UserState:
    return UserState.from_payload(
        state.to_payload(), None if state.vector is None else state.vector.tolist()
    )
