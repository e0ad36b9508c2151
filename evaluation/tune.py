"""Choosing the ranking knobs on the validation slice (never the test period).

Coordinate ascent on HR@10 of the product over a small grid per knob, starting from the
current settings: each knob in turn takes the value that scores best with the others
fixed. The co-occurrence kNN baseline gets the same treatment for its own knobs, so the
comparison is between tuned systems.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from core.settings import Settings
from evaluation.baselines import KnnConfig
from evaluation.bundle import Bundle
from evaluation.prequential import replay
from evaluation.scoring import summarize
from evaluation.split import Split

PRODUCT_GRID: dict[str, Sequence[Any]] = {
    "weight_covisit": (0.1, 0.15, 0.25, 0.5, 1.0, 2.0),
    "recent_items": (20, 50),
    "covisit_items": (10, 20, 40),
    "covisit_position_decay": (0.8, 0.9, 0.95),
    "covisit_half_life_seconds": (3600.0, 86400.0, 30 * 86400.0),
    "weight_recent": (0.0, 0.4, 0.8, 1.2, 1.6),
    "recent_similarity_half_life_seconds": (1800.0, 86400.0),
    "recent_position_decay": (0.5, 0.7, 0.9),
    "weight_category": (0.0, 0.3, 0.6),
    "weight_popularity": (0.0, 0.15, 0.3, 0.6, 1.0, 1.5),
    "trending_half_life_seconds": (3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0),
    "blend_mass": (1.0, 3.0, 10.0),
    "candidates": (100, 300, 600),
    "covisit_candidates": (0, 50, 100, 300),
    "weight_session": (0.0, 0.4, 0.6, 0.8, 1.0),
    "session_position_decay": (0.6, 0.7, 0.8, 0.9),
    "weight_new_item": (0.0, 0.1, 0.2, 0.3, 0.4),
}
KNN_GRID: dict[str, Sequence[Any]] = {
    "last_items": (5, 10, 20, 40),
    "position_decay": (0.6, 0.8, 0.9, 1.0),
}


def coordinate_ascent(
    score: Callable[[dict[str, Any]], float],
    start: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    rounds: int = 1,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], float, list[tuple[dict[str, Any], float]]]:
    """Best values found, their score, and every (values, score) tried."""
    best = dict(start)
    cache: dict[tuple, float] = {}
    tried: list[tuple[dict[str, Any], float]] = []

    def scored(values: dict[str, Any]) -> float:
        key = tuple(sorted(values.items()))
        if key not in cache:
            cache[key] = score(values)
            tried.append((dict(values), cache[key]))
            log(f"  {values} -> HR@10 {cache[key]:.4f}")
        return cache[key]

    best_score = scored(best)
    for _ in range(rounds):
        for knob, values in grid.items():
            for v in values:
                cand = {**best, knob: v}
                s = scored(cand)
                if s > best_score + 1e-9:
                    best, best_score = cand, s
    return best, best_score, tried


def tune_product(
    val: Split, bundle: Bundle, settings: Settings, seed: int, rounds: int = 1, log=print
) -> tuple[dict[str, Any], float, list]:
    start = {k: settings.value(k) for k in PRODUCT_GRID}

    def score(values: dict[str, Any]) -> float:
        s = settings.with_values(**values)
        run = replay(val.train, val.test, bundle, s, seed, names=("product",), quiet=True)
        return summarize(run.ranks["product"])["hr"]

    return coordinate_ascent(score, start, PRODUCT_GRID, rounds, log)


def tune_knn(
    val: Split, bundle: Bundle, settings: Settings, seed: int, base: KnnConfig, log=print
) -> tuple[KnnConfig, float, list]:
    start = {k: getattr(base, k) for k in KNN_GRID}

    def score(values: dict[str, Any]) -> float:
        cfg = replace(base, **values)
        run = replay(
            val.train, val.test, bundle, settings, seed, names=("cooc_knn",), knn=cfg, quiet=True
        )
        return summarize(run.ranks["cooc_knn"])["hr"]

    best, s, tried = coordinate_ascent(score, start, KNN_GRID, 1, log)
    return replace(base, **best), s, tried
