"""Logged-candidate tuning: replay a slice once with the product, keep every candidate of
every request with each re-rank term's raw value, then score any weighting of the terms
offline (milliseconds instead of a replay per configuration).

The candidates are what the service retrieved for the request (ANN + co-visited items,
seen items excluded), so a weighting is exact for them; what it cannot change is which
items were retrieved. Extra term columns (e.g. a session model's term) are computed on
the same candidates with the same user state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.catalog import Catalog
from core.progress import progress
from core.ranking import sequence_scores
from core.session import SessionModel
from core.settings import Settings
from core.state import UserState
from evaluation.bundle import Bundle
from evaluation.prequential import Served, events_of, systems_for
from evaluation.split import Split
from training.data import index_of

TERMS = ("ann", "category", "recent", "popularity", "covisit", "new", "session")
"""The service's own terms, logged with every weight 1 (so a term's value is raw)."""
K = 10


def weight_setting(term: str) -> str:
    """The ranking setting that weighs a term (``new`` -> ``weight_new_item``)."""
    return "weight_new_item" if term == "new" else f"weight_{term}"


@dataclass(slots=True)
class Logged:
    terms: list[str]
    features: np.ndarray
    """(events, candidates, terms) float32, 0 where padded."""
    valid: np.ndarray
    """(events, candidates) bool."""
    target: np.ndarray
    """(events,) index of the event's item among its candidates, -1 when not retrieved."""
    sequence_rank: dict[str, np.ndarray] = field(default_factory=dict)
    """Per session model: (events,) 0-based rank of the event's item among every item the
    user had not seen, by the model alone (how far its own top-N would reach)."""

    def hr(self, weights: Mapping[str, float]) -> float:
        """HR@10 of the weighting (ties: the earlier candidate first, as the service)."""
        w = np.array([weights.get(t, 0.0) for t in self.terms], dtype=np.float32)
        return float(self.hits(w).mean())

    def hits(self, w: np.ndarray) -> np.ndarray:
        score = self.features @ w
        score[~self.valid] = -np.inf
        got = self.target >= 0
        t = np.where(got, self.target, 0)
        mine = score[np.arange(len(t)), t][:, None]
        idx = np.arange(score.shape[1])[None, :]
        above = (score > mine) | ((score == mine) & (idx < t[:, None]))
        hit: np.ndarray = got & (above.sum(axis=1) < K)
        return hit

    def save(self, path: Path) -> None:
        """The arrays, to try other weightings or term transforms later."""
        path.parent.mkdir(parents=True, exist_ok=True)
        ranks = {f"rank:{n}": r for n, r in self.sequence_rank.items()}
        np.savez(
            path,
            allow_pickle=False,
            terms=np.array(self.terms),
            features=self.features,
            valid=self.valid,
            target=self.target,
            **ranks,
        )

    @classmethod
    def load(cls, path: Path) -> Logged:
        with np.load(path) as z:
            ranks = {k[5:]: z[k] for k in z.files if k.startswith("rank:")}
            return cls([str(t) for t in z["terms"]], z["features"], z["valid"], z["target"], ranks)

    def recall(self, sequence: str | None = None, top: int = 0) -> float:
        """Share of events whose item was among the candidates (the bound of any
        weighting), or among them or the ``top`` best of session model ``sequence``."""
        got = self.target >= 0
        if sequence is not None:
            got = got | (self.sequence_rank[sequence] < top)
        return float(got.mean())


def log_candidates(
    val: Split,
    bundle: Bundle,
    settings: Settings,
    seed: int,
    sessions: Mapping[str, SessionModel] | None = None,
    quiet: bool = True,
) -> Logged:
    """Replay ``val.test`` through the product with every weight 1; log candidates."""
    sessions = sessions or {}
    logging_settings = settings.with_values(
        **{weight_setting(t): 1.0 for t in TERMS if t != "ann"}, weight_sequence=0.0, mmr_lambda=1.0
    )
    item_ids = [i.item_id for i in bundle.items]
    test_rows = index_of(val.test.item_ids, item_ids)
    seen: dict[str, set[str]] = {}
    for u, i in zip(val.train.user_ids.tolist(), val.train.item_ids.tolist(), strict=True):
        seen.setdefault(u, set()).add(i)
    terms = list(TERMS) + [f"sequence:{n}" for n in sessions]
    feats: list[np.ndarray] = []
    targets: list[int] = []
    ranks: dict[str, list[int]] = {}
    with systems_for(val.train, bundle, logging_settings, seed, ("product",)) as (sy, feeders):
        product = sy[0]
        assert isinstance(product, Served)  # the one system asked for: the store-backed product
        rec = product.recommender
        stream = zip(events_of(val.test), test_rows.tolist(), strict=True)
        for ev, row in progress(stream, total=len(val.test), desc="log", unit="ev", quiet=quiet):
            u = ev.user_id
            res = rec.recommend(u, 100_000, now=ev.ts, exclude_items=sorted(seen.get(u, ())))
            rows = np.array([r.row for r in res.items], dtype=np.int64)
            cols = [[r.terms.get(t, 0.0) for t in TERMS] for r in res.items]
            f = np.array(cols, dtype=np.float32).reshape(len(rows), len(TERMS))
            if sessions:
                state = rec.store.read_user_state(u)
                extra = [
                    sequence_scores(rows, res.catalog, state, m, ev.ts)[0]
                    for m in sessions.values()
                ]
                f = np.concatenate([f, np.stack(extra, axis=1)], axis=1)
                for name, m in sessions.items():
                    ranks.setdefault(name, []).append(
                        _model_rank(m, res.catalog, state, ev.ts, row, seen.get(u, set()))
                    )
            feats.append(f)
            hit = np.flatnonzero(rows == row)
            targets.append(int(hit[0]) if len(hit) else -1)
            for fd in feeders:
                fd(ev, row)
            seen.setdefault(u, set()).add(ev.item_id)
    width = max((len(f) for f in feats), default=0)
    features = np.zeros((len(feats), width, len(terms)), dtype=np.float32)
    valid = np.zeros((len(feats), width), dtype=bool)
    for e, f in enumerate(feats):
        features[e, : len(f)] = f
        valid[e, : len(f)] = True
    seq_rank = {n: np.array(r, dtype=np.int64) for n, r in ranks.items()}
    return Logged(terms, features, valid, np.array(targets, dtype=np.int64), seq_rank)


def _model_rank(
    model: SessionModel,
    catalog: Catalog,
    state: UserState | None,
    now: float,
    row: int,
    seen: set[str],
) -> int:
    """0-based rank of ``row`` by the session model among the items not ``seen``."""
    known = [r for r in (state.recent if state else []) if r.item_id in catalog.index]
    if not known:
        return 1 << 30
    rows = [catalog.index[r.item_id] for r in known]
    h, _ = model.encode(rows, [r.ts for r in known], now)
    scores = model.scores(h, np.arange(len(catalog.items)))
    drop = [catalog.index[i] for i in seen if i in catalog.index]
    scores[drop] = -np.inf
    return int((scores > scores[row]).sum())


def ascend(
    logged: Logged,
    start: Mapping[str, float],
    grid: Mapping[str, Sequence[float]],
    rounds: int = 2,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, float], float, list[tuple[dict[str, Any], float]]]:
    """Coordinate ascent on HR@10 over term weights (strict improvement); every weighting
    tried is returned with its HR."""
    best = dict(start)
    tried: list[tuple[dict[str, Any], float]] = []
    best_hr = logged.hr(best)
    tried.append((dict(best), best_hr))
    for _ in range(rounds):
        for term, values in grid.items():
            for v in values:
                cand = {**best, term: v}
                hr = logged.hr(cand)
                tried.append((dict(cand), hr))
                if hr > best_hr + 1e-9:
                    best, best_hr = cand, hr
                    log(f"  {term}={v} -> HR@10 {hr:.4f}")
    return best, best_hr, tried
