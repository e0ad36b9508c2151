"""`recsys evaluate` (``python -m evaluation.run``): prequential replay of MovieLens 100K,
product vs baselines.

`recsys evaluate` runs it in full, report under reports/eval; `--tune` chooses the ranking
knobs on the validation slice; `--max-events 2000 --epochs 2` takes a quick look.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from core.records import iso
from core.settings import PROJECT_ROOT, get_settings
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


def main(cfg: EvalConfig | None = None) -> int:
    settings = get_settings()
    args = cfg or EvalConfig()
    data_dir = args.data_dir or settings.data_dir
    say: Callable[[str], None] = (
        (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    )
    started = time.perf_counter()
    try:
        inter, items = load_movielens(data_dir)
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
        split.train,
        items,
        text,
        settings,
        args.seed,
        fit_cfg,
        quiet=args.quiet,
        session=session,
        held_out=split.cold_items,  # they enter the catalogue at their first event
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
        "command": " ".join(["recsys evaluate", shlex.join(_options_given())]).strip(),
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


def _options_given() -> list[str]:
    """This run's options as typed, for the report (after ``evaluate`` under `recsys`)."""
    argv = sys.argv[1:]
    return argv[1:] if argv[:1] in (["evaluate"], ["eval"]) else argv


@dataclass(frozen=True)
class EvalConfig:
    """One run's options (`recsys evaluate --help` explains each); ``data_dir`` None: the
    settings' RECSYS_DATA_DIR."""

    data_dir: Path | None = None
    seed: int = 42
    cutoff: float = 0.8
    cold_items: float = 0.1
    validation: float = 0.1
    epochs: int = FitConfig().epochs
    max_events: int | None = None
    seeds: tuple[int, ...] = SEEDS
    seq_epochs: int | None = None
    tune: bool = False
    rounds: int = 1
    tune_sequence: str | None = None
    no_mmr: bool = False
    out: Path = PROJECT_ROOT / "reports" / "eval"
    quiet: bool = False


_D = EvalConfig()
app = typer.Typer(add_completion=False, rich_markup_mode="markdown")


def _open_share(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise typer.BadParameter("must be in (0, 1)")
    return value


def _share(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise typer.BadParameter("must be in [0, 1)")
    return value


def _seeds(value: str | None) -> tuple[int, ...]:
    if value is None:
        return _D.seeds
    try:
        return tuple(int(x) for x in value.split(",") if x)
    except ValueError:
        raise typer.BadParameter("comma-separated integers, e.g. 0,1,2") from None


def _sequence_part(value: str | None) -> str | None:
    if value is not None and value not in SEQUENCE_PARTS:
        raise typer.BadParameter(f"one of {', '.join(SEQUENCE_PARTS)}")
    return value


@app.command(help=__doc__, epilog="Example: recsys evaluate --max-events 2000 --epochs 2")
def cli(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="MovieLens dir [default: RECSYS_DATA_DIR]", show_default=False),
    ] = _D.data_dir,
    seed: Annotated[int, typer.Option(help="Seed of the split and the models.")] = _D.seed,
    cutoff: Annotated[
        float, typer.Option(callback=_open_share, help="Time quantile of the split.")
    ] = _D.cutoff,
    cold_items: Annotated[
        float, typer.Option(callback=_share, help="Share of items held out (cold items).")
    ] = _D.cold_items,
    validation: Annotated[
        float, typer.Option(callback=_open_share, help="Share of training events to tune on.")
    ] = _D.validation,
    epochs: Annotated[int, typer.Option(min=1, help="Two-tower epochs.")] = _D.epochs,
    max_events: Annotated[
        int | None, typer.Option(min=1, help="Replay only the first N test events.")
    ] = _D.max_events,
    seeds: Annotated[
        str | None,
        typer.Option(
            callback=_seeds,
            metavar="N,N,...",
            help="Seeds of the SASRec/GRU4Rec baselines, comma-separated "
            f"[default: {','.join(map(str, _D.seeds))}]",
            show_default=False,
        ),
    ] = None,
    seq_epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Override the sequence models' epochs (a quick look)."),
    ] = _D.seq_epochs,
    tune: Annotated[
        bool, typer.Option("--tune", help="Tune on the validation slice instead.")
    ] = _D.tune,
    rounds: Annotated[
        int, typer.Option(min=1, help="Coordinate-ascent rounds for --tune.")
    ] = _D.rounds,
    tune_sequence: Annotated[
        str | None,
        typer.Option(
            callback=_sequence_part,
            metavar="|".join(SEQUENCE_PARTS),
            help="Tune on the validation slice: the SASRec/GRU4Rec baselines, the product's "
            "session model, or its re-rank weight (logged candidates); merged into "
            "tuning.json.",
        ),
    ] = _D.tune_sequence,
    no_mmr: Annotated[
        bool, typer.Option("--no-mmr", help="Skip the MMR diversity variant.")
    ] = _D.no_mmr,
    out: Annotated[Path, typer.Option(help="Report directory.")] = _D.out,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = _D.quiet,
) -> None:
    code = main(EvalConfig(**locals()))  # the parameters are EvalConfig's fields (seeds: parsed)
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":
    app(prog_name="python -m evaluation.run")
