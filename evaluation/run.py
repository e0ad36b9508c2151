"""``python -m evaluation.run``: prequential replay of MovieLens 100K, product vs baselines.

python -m evaluation.run                  # full run, report under reports/eval
python -m evaluation.run --tune           # choose the ranking knobs on the validation slice
python -m evaluation.run --max-events 2000 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.records import iso
from core.settings import PROJECT_ROOT, Settings, get_settings
from evaluation.baselines import AlsConfig, KnnConfig
from evaluation.bundle import train_bundle
from evaluation.prequential import SYSTEMS, replay
from evaluation.report import figures, write
from evaluation.sequential import GRU4REC, SASREC, SEEDS
from evaluation.split import temporal_split
from evaluation.tune import (
    PRODUCT_GRID,
    SEQUENCE_PARTS,
    tune_knn,
    tune_product,
    tune_sequences,
    update_tuning,
)
from training.covisit import CovisitConfig
from training.data import DataError, load_movielens
from training.fit import FitConfig
from training.sequence import SESSION
from training.text import embed_items

RANKING_SETTINGS = (
    "half_life_seconds",
    "event_weights",
    "blend_mass",
    "candidates",
    "weight_ann",
    "weight_category",
    "weight_recent",
    "weight_popularity",
    "weight_covisit",
    "weight_new_item",
    "weight_session",
    "session_position_decay",
    "weight_sequence",
    "recent_similarity_half_life_seconds",
    "recent_position_decay",
    "covisit_items",
    "covisit_candidates",
    "recent_items",
    "trending_half_life_seconds",
    "mmr_lambda",
    "mmr_pool",
)
# The kNN baseline's knobs as tuned on the validation slice (`--tune`); its co-visitation
# window too (3/5/10 tried: 0.2130/0.2198/0.2214), so it may differ from the product's.
KNN = KnnConfig(last_items=40, position_decay=0.9, covisit=CovisitConfig(window=10))
# ALS's knobs as tuned on the validation slice (factors 16-128, regularization 0.01-5,
# alpha 1-40; coordinate ascent, see reports/eval/tuning.json).
ALS = AlsConfig(factors=32, regularization=0.01, alpha=1.0, iterations=15)


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    args = parse_args(argv, settings)
    say: Callable[[str], None] = (
        (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    )
    started = time.perf_counter()
    try:
        inter, items = load_movielens(args.data_dir)
    except (FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    split = temporal_split(inter, items, args.cutoff, args.cold_items, args.seed)
    text = embed_items(items, settings.state_dir / "cache", quiet=args.quiet)
    fit_cfg = FitConfig(epochs=args.epochs, half_life=settings.fold.half_life_seconds)

    if args.tune_sequence:
        val = split.validation(args.validation)
        say(f"validation: train {len(val.train):,} events, tune on {len(val.test):,}")
        out = tune_sequences(
            args.tune_sequence, val, items, text, settings, args.seed, fit_cfg, say
        )
        update_tuning(args.out / "tuning.json", {"sequence": out})
        print(json.dumps(out, indent=1, default=str)[:4000])
        return 0

    if args.tune:
        val = split.validation(args.validation)
        say(f"validation: train {len(val.train):,} events, tune on {len(val.test):,}")
        bundle = train_bundle(
            val.train, items, text, settings, args.seed, fit_cfg, quiet=args.quiet
        )
        if args.max_events:
            val = type(val)(
                val.train, val.test.take(slice(0, args.max_events)), val.cutoff, val.cold_items
            )
        say("kNN baseline:")
        knn, knn_hr, _ = tune_knn(val, bundle, settings, args.seed, KNN, log=say)
        say("product:")
        best, hr, tried = tune_product(val, bundle, settings, args.seed, args.rounds, log=say)
        out = {
            "validation_events": len(val.test),
            "validation_start": iso(val.cutoff),
            "knn": {
                "last_items": knn.last_items,
                "position_decay": knn.position_decay,
                "hr": knn_hr,
            },
            "product": {"values": best, "hr": hr},
            "grid": {k: list(v) for k, v in PRODUCT_GRID.items()},
            "tried": tried,
        }
        update_tuning(args.out / "tuning.json", out)
        print(json.dumps({k: out[k] for k in ("knn", "product")}, indent=2, default=str))
        return 0

    t0 = time.perf_counter()
    say(f"train {len(split.train):,} events before {iso(split.cutoff)}; test {len(split.test):,}")
    session = replace(SESSION, epochs=args.seq_epochs or SESSION.epochs)
    bundle = train_bundle(
        split.train, items, text, settings, args.seed, fit_cfg, quiet=args.quiet, session=session
    )
    t_train = time.perf_counter() - t0
    sequence = {c.kind: replace(c, epochs=args.seq_epochs or c.epochs) for c in (SASREC, GRU4REC)}
    test = split.test.take(slice(0, args.max_events)) if args.max_events else split.test
    t0 = time.perf_counter()
    run = replay(
        split.train,
        test,
        bundle,
        settings,
        args.seed,
        names=SYSTEMS,
        cold_items=split.cold_items,
        knn=KNN,
        als=ALS,
        mmr=not args.no_mmr,
        quiet=args.quiet,
        sequence=sequence,
        seeds=args.seeds,
    )
    t_replay = time.perf_counter() - t0
    fig = figures(run)
    meta: dict[str, Any] = {
        "command": " ".join(
            ["python -m evaluation.run", shlex.join(argv if argv is not None else sys.argv[1:])]
        ).strip(),
        "seed": args.seed,
        "cutoff_quantile": args.cutoff,
        "cutoff_time": iso(split.cutoff),
        "train_events": len(split.train),
        "cold_items": len(split.cold_items),
        "cold_share": args.cold_items,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "seconds": {
            "train": t_train,
            "replay": t_replay,
            "total": time.perf_counter() - started,
        },
        "settings": {k: settings.value(k) for k in RANKING_SETTINGS},
        "knn": f"last {KNN.last_items} items, position decay {KNN.position_decay}, co-visitation {KNN.covisit}",
        "als": str(ALS),
        "sequence": {k: v.to_dict() for k, v in sequence.items()},
        "sequence_seeds": list(args.seeds),
        "session_model": session.to_dict(),
        "tuning": _tuning_summary(args.out / "tuning.json"),
        "sequence_tuning": _sequence_tuning(args.out / "tuning.json"),
    }
    path = write(fig, meta, args.out)
    print(summary(fig, meta, path))
    return 0


def _sequence_tuning(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    tuning: dict[str, Any] = json.loads(path.read_text())
    return tuning.get("sequence")


def _tuning_summary(path: Path) -> str | None:
    if not path.is_file():
        return None
    t = json.loads(path.read_text())
    text: str = (
        f"`python -m evaluation.run --tune` replayed the last {t['validation_events']:,} "
        f"training events (from {t['validation_start']}) with a model trained on the events "
        f"before them. Product HR@10 there: {t['product']['hr']:.4f} with "
        f"`{t['product']['values']}`; kNN baseline: {t['knn']['hr']:.4f} with last_items="
        f"{t['knn']['last_items']}, position_decay={t['knn']['position_decay']}. "
        f"{len(t['tried'])} product configurations were tried (grid: `{t['grid']}`). "
        + t.get("note", "")
        + (
            f" MMR on validation (lambda: [HR@10, diversity]): {t['mmr_validation']}."
            if "mmr_validation" in t
            else ""
        )
    )
    return text


def summary(fig: dict[str, Any], meta: dict[str, Any], path: Path) -> str:
    lines = [
        f"{'system':22s} {'HR@10':>7s} {'NDCG@10':>8s} {'MRR@10':>7s} {'cov':>6s} {'cold-item HR':>12s}"
    ]
    for s, m in fig["systems"].items():
        lines.append(
            f"{s:22s} {m['hr']:7.4f} {m['ndcg']:8.4f} {m['mrr']:7.4f} {m['coverage']:6.3f} "
            f"{m['hr_cold_items']:12.4f}"
        )
    if "ratio_best_baseline" in fig:
        lines.append(
            f"product / best baseline ({fig['best_baseline']}): {fig['ratio_best_baseline']:.3f}x"
        )
    if "ratio_batch" in fig:
        lines.append(f"product / batch two-tower: {fig['ratio_batch']:.3f}x")
    lines.append(
        f"cold users: {fig['cold_user_share']:.1%} of events; runtime {meta['seconds']['total']:.0f}s; report: {path}"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, default=settings.data_dir)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cutoff", type=float, default=0.8, help="time quantile of the split")
    p.add_argument("--cold-items", type=float, default=0.1, help="share of items held out")
    p.add_argument(
        "--validation", type=float, default=0.1, help="share of training events to tune on"
    )
    p.add_argument("--epochs", type=int, default=FitConfig().epochs)
    p.add_argument("--max-events", type=int, help="replay only the first N test events")
    p.add_argument(
        "--seeds",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=list(SEEDS),
        help="seeds of the SASRec/GRU4Rec baselines (comma-separated)",
    )
    p.add_argument(
        "--seq-epochs", type=int, help="override the sequence models' epochs (a quick look)"
    )
    p.add_argument("--tune", action="store_true", help="tune on the validation slice instead")
    p.add_argument("--rounds", type=int, default=1, help="coordinate-ascent rounds for --tune")
    p.add_argument(
        "--tune-sequence",
        choices=SEQUENCE_PARTS,
        help="tune on the validation slice: the SASRec/GRU4Rec baselines, the product's "
        "session model, or its re-rank weight (logged candidates); merged into tuning.json",
    )
    p.add_argument("--no-mmr", action="store_true", help="skip the MMR diversity variant")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports" / "eval")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if not 0 < args.cutoff < 1 or not 0 <= args.cold_items < 1 or not 0 < args.validation < 1:
        p.error("--cutoff and --validation must be in (0, 1), --cold-items in [0, 1)")
    return args


if __name__ == "__main__":
    sys.exit(main())
