"""Choosing the ranking knobs on the validation slice (never the test period).

Coordinate ascent on HR@10 of the product over a small grid per knob, starting from the
current settings: each knob in turn takes the value that scores best with the others
fixed. The co-occurrence kNN baseline gets the same treatment for its own knobs, so the
comparison is between tuned systems.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from core.artifacts import load_session, save_session
from core.records import ItemRecord
from core.session import SessionModel
from core.settings import Settings
from evaluation.baselines import KnnConfig
from evaluation.bundle import Bundle, train_bundle
from evaluation.logged import ascend, log_candidates, weight_setting
from evaluation.prequential import replay
from evaluation.scoring import summarize
from evaluation.sequential import GRU4REC, SASREC, tune_sequence
from evaluation.split import Split
from training.fit import FitConfig
from training.sequence import SESSION, SeqConfig, train_session_model

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
    cache: dict[tuple[tuple[str, Any], ...], float] = {}
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
    val: Split,
    bundle: Bundle,
    settings: Settings,
    seed: int,
    rounds: int = 1,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], float, list[tuple[dict[str, Any], float]]]:
    start = {k: settings.value(k) for k in PRODUCT_GRID}

    def score(values: dict[str, Any]) -> float:
        s = settings.with_values(**values)
        run = replay(val.train, val.test, bundle, s, seed, names=("product",), quiet=True)
        return summarize(run.ranks["product"])["hr"]

    return coordinate_ascent(score, start, PRODUCT_GRID, rounds, log)


def tune_knn(
    val: Split,
    bundle: Bundle,
    settings: Settings,
    seed: int,
    base: KnnConfig,
    log: Callable[[str], None] = print,
) -> tuple[KnnConfig, float, list[tuple[dict[str, Any], float]]]:
    start = {k: getattr(base, k) for k in KNN_GRID}

    def score(values: dict[str, Any]) -> float:
        cfg = replace(base, **values)
        run = replay(
            val.train, val.test, bundle, settings, seed, names=("cooc_knn",), knn=cfg, quiet=True
        )
        return summarize(run.ranks["cooc_knn"])["hr"]

    best, s, tried = coordinate_ascent(score, start, KNN_GRID, 1, log)
    return replace(base, **best), s, tried


# --- sequence models -----------------------------------------------------------------

SEQUENCE_PARTS = ("baselines", "session", "weights")
TUNE_EPOCHS = 20
"""Each configuration trains this long; its best checkpoint (every 5 epochs) counts."""
SEQ_GRID: dict[str, Sequence[Any]] = {
    "lr": (1e-2,),
    "dropout": (0.1, 0.3),
    "blocks": (2,),
}
SESSION_GRID: dict[str, Sequence[Any]] = {
    "time_gaps": (False,),
    "content": (True,),
    "dropout": (0.1, 0.3),
}
WEIGHT_GRID: dict[str, Sequence[float]] = {
    "sequence": (0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0),
    "session": (0.0, 0.4, 0.8, 1.2),
    "covisit": (0.0, 0.2, 0.4, 0.8),
    "popularity": (0.0, 0.2, 0.4, 0.8),
    "ann": (0.5, 1.0, 1.5),
    "new": (0.0, 0.1, 0.2, 0.4),
    "recent": (0.0, 0.2, 0.4),
    "category": (0.0, 0.3),
}
"""Weights of the logged terms (``evaluation.logged``): the service's ``weight_<term>``."""


def tune_sequences(
    part: str,
    val: Split,
    items: list[ItemRecord],
    text: np.ndarray,
    settings: Settings,
    seed: int,
    fit_cfg: FitConfig,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One part of the sequence tuning on the validation slice; its attempts."""
    item_ids = [i.item_id for i in items]
    if part == "baselines":
        out: dict[str, Any] = {}
        for base in (SASREC, GRU4REC):
            cfg, hr, tried = tune_sequence(
                val, item_ids, replace(base, epochs=TUNE_EPOCHS), SEQ_GRID, seed, log=log
            )
            out[base.kind] = {"chosen": cfg.to_dict(), "hr": hr, "tried": tried}
        return {"baselines": out}
    bundle = train_bundle(val.train, items, text, settings, seed, fit_cfg, quiet=True, session=None)
    if part == "session":
        cfg, hr, tried = tune_sequence(
            val,
            item_ids,
            replace(SESSION, epochs=TUNE_EPOCHS),
            SESSION_GRID,
            seed,
            log=log,
            content=bundle.vectors,
        )
        return {"session": {"chosen": cfg.to_dict(), "hr": hr, "tried": tried}}
    return {"weights": tune_sequence_weight(val, bundle, settings, seed, item_ids, log)}


def tune_sequence_weight(
    val: Split,
    bundle: Bundle,
    settings: Settings,
    seed: int,
    item_ids: list[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The product's re-rank weights with the session model's term, on logged candidates:
    the chosen session model (``SESSION``) and, for comparison, the same without time gaps."""
    sessions = {}
    variants = (
        ("chosen", SESSION),
        ("no_gaps", replace(SESSION, time_gaps=False)),
        ("len50", replace(SESSION, max_len=50)),
    )
    for name, cfg in variants:
        content = bundle.vectors if cfg.content else None
        sessions[name] = _session(val, item_ids, cfg, seed, content, settings.state_dir / "cache")
    # The dataflow keeps as many recent items as the longest model reads; the service's
    # other terms read the newest 20 at most, so they are unchanged.
    longest = max(m.max_len for m in sessions.values())
    logged = log_candidates(
        val,
        bundle,
        settings.with_values(recent_items=max(longest, 20)),
        seed,
        sessions,
        quiet=False,
    )
    logged.save(settings.state_dir / "cache" / "logged-validation.npz")
    start = {t: float(cast(float, settings.value(weight_setting(t)))) for t in WEIGHT_GRID}
    out: dict[str, Any] = {
        "candidate_recall": logged.recall(),
        "candidate_recall_with_session_top": {
            n: {top: logged.recall(n, top) for top in (20, 50, 100)} for n in sessions
        },
        "current": logged.hr(start),
    }
    for name in sessions:
        grid = {("sequence:" + name if t == "sequence" else t): v for t, v in WEIGHT_GRID.items()}
        begin = {("sequence:" + name if t == "sequence" else t): v for t, v in start.items()}
        best, hr, tried = ascend(logged, begin, grid, rounds=2, log=log)
        out[name] = {"weights": best, "hr": hr, "tried": len(tried), "log": tried}
    return out


def _session(
    val: Split,
    item_ids: list[str],
    cfg: SeqConfig,
    seed: int,
    content: np.ndarray | None,
    cache: Path,
) -> SessionModel:
    """A session model trained on ``val.train``, kept under ``cache`` by what made it."""
    key = json.dumps([cfg.to_dict(), seed, len(val.train), val.cutoff, len(item_ids)])
    path = cache / f"session-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (loaded := load_session(path)) is not None:
        return loaded
    model = train_session_model(val.train, item_ids, cfg, seed, content)[0]
    path.mkdir(parents=True, exist_ok=True)
    save_session(path, model)
    return model


def update_tuning(path: Path, values: Mapping[str, Any]) -> None:
    """Merge ``values`` into the tuning record (nested dicts merged one level deep), so
    each tuning run keeps the others' results."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    for k, v in values.items():
        old[k] = {**old[k], **v} if isinstance(v, dict) and isinstance(old.get(k), dict) else v
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(old, indent=2, default=str))
