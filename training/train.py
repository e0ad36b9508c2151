"""`recsys train` (``python -m training.train``): load -> split -> embed text -> fit -> held-out check ->
write the model version -> publish.

One run produces one versioned model directory (see ``core.artifacts``) with item
vectors, the user head, long-term profiles and the held-out ranking quality, then
publishes it to the feature store unless ``--no-publish``. The same seed on the same data
gives the same model.
"""

from __future__ import annotations

import functools
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from core.artifacts import write_artifacts
from core.records import ItemRecord, iso
from core.session import SessionModel
from core.settings import Settings, get_settings
from featurestore.publish import publish_from_training
from training.covisit import covisit_matrix, with_covisit
from training.data import (
    DataError,
    Interactions,
    before,
    describe,
    find_file,
    fingerprint,
    load_items,
    load_jsonl_events,
    load_movielens,
    parse_time,
    quantile_time,
    restrict,
    temporal_split,
)
from training.fit import FitConfig, build_examples, fit, item_log_q, seed_everything
from training.holdout import holdout_check
from training.model import ModelConfig, TwoTower, category_matrix, id_index
from training.popularity import with_popularity
from training.profiles import SEEN_CAP, pooled_histories, seen_items, user_vectors
from training.sequence import SESSION, session_holdout_hr, train_session_model
from training.text import MODEL_NAME, embed_items

# -----------------------------------------------------------------------------
# config: every option of a run; its default from the settings or the model/fit configs

_FIT, _MODEL = FitConfig(), ModelConfig()


@dataclass(frozen=True)
class TrainConfig:
    """One run's options (`recsys train --help` explains each). A ``None`` path or
    half-life means the settings' value: RECSYS_DATA_DIR, RECSYS_MODEL_DIR,
    <RECSYS_STATE_DIR>/cache, RECSYS_FOLD_HALF_LIFE_SECONDS (as the dataflow)."""

    # input
    data_dir: Path | None = None
    events_jsonl: Path | None = None
    items: Path | None = None
    until: float | None = None
    max_users: int | None = None
    max_items: int | None = None
    # training
    holdout: float = 0.2
    seed: int = 42
    epochs: int = _FIT.epochs
    batch_size: int = _FIT.batch_size
    dim: int = _MODEL.dim
    lr: float = _FIT.lr
    weight_decay: float = _FIT.weight_decay
    temperature: float = _MODEL.temperature
    history: int = _FIT.history
    session_epochs: int = SESSION.epochs
    half_life: float | None = None
    # output
    model_dir: Path | None = None
    cache_dir: Path | None = None
    no_publish: bool = False
    quiet: bool = False

    def resolved(self, settings: Settings) -> Resolved:
        """The paths and half-life, every ``None`` filled from the settings."""
        model_dir = self.model_dir or settings.model_dir
        assert model_dir is not None, "Settings derives it from state_dir"
        return Resolved(
            data_dir=self.data_dir or settings.data_dir,
            model_dir=model_dir,
            cache_dir=self.cache_dir or settings.state_dir / "cache",
            half_life=self.half_life or settings.fold.half_life_seconds,
        )


@dataclass(frozen=True)
class Resolved:
    """A run's paths and half-life, after the settings filled what the options left."""

    data_dir: Path
    model_dir: Path
    cache_dir: Path
    half_life: float


_D = TrainConfig()
app = typer.Typer(add_completion=False, rich_markup_mode="markdown")
_IN, _TRAIN, _OUT = "Input", "Training", "Output"


def _time_arg(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _share(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise typer.BadParameter("must be in [0, 1)")
    return value


def _positive(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise typer.BadParameter("must be > 0")
    return value


@app.command(help=__doc__, epilog="Example: recsys train --until 1998-03-01T00:00:00Z --seed 7")
def cli(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="MovieLens dir with *.inter and *.item [default: RECSYS_DATA_DIR]",
            show_default=False,
            rich_help_panel=_IN,
        ),
    ] = _D.data_dir,
    events_jsonl: Annotated[
        Path | None,
        typer.Option(help="Train on a JSON-lines event log instead.", rich_help_panel=_IN),
    ] = _D.events_jsonl,
    items: Annotated[
        Path | None,
        typer.Option(help="MovieLens-style .item file for --events-jsonl.", rich_help_panel=_IN),
    ] = _D.items,
    until: Annotated[
        float | None,
        typer.Option(
            parser=_time_arg,
            metavar="TIME",
            help="Use only events strictly before this time (ISO-8601 with zone, or unix s).",
            rich_help_panel=_IN,
        ),
    ] = _D.until,
    max_users: Annotated[
        int | None,
        typer.Option(min=1, help="Deterministic slice: the first N user ids.", rich_help_panel=_IN),
    ] = _D.max_users,
    max_items: Annotated[
        int | None,
        typer.Option(
            min=1, help="Deterministic slice: the N most used items.", rich_help_panel=_IN
        ),
    ] = _D.max_items,
    holdout: Annotated[
        float,
        typer.Option(
            callback=_share,
            help="Share of the latest events held out for the held-out check (0: none).",
            rich_help_panel=_TRAIN,
        ),
    ] = _D.holdout,
    seed: Annotated[
        int,
        typer.Option(
            help="Random seed: the same seed on the same data, the same model.",
            rich_help_panel=_TRAIN,
        ),
    ] = _D.seed,
    epochs: Annotated[
        int, typer.Option(min=1, help="Passes over the training examples.", rich_help_panel=_TRAIN)
    ] = _D.epochs,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Examples per step.", rich_help_panel=_TRAIN)
    ] = _D.batch_size,
    dim: Annotated[
        int, typer.Option(min=1, help="Embedding dimension of both towers.", rich_help_panel=_TRAIN)
    ] = _D.dim,
    lr: Annotated[
        float,
        typer.Option(callback=_positive, help="AdamW learning rate.", rich_help_panel=_TRAIN),
    ] = _D.lr,
    weight_decay: Annotated[
        float, typer.Option(min=0.0, help="AdamW weight decay.", rich_help_panel=_TRAIN)
    ] = _D.weight_decay,
    temperature: Annotated[
        float,
        typer.Option(
            callback=_positive,
            help="Softmax temperature of the in-batch loss.",
            rich_help_panel=_TRAIN,
        ),
    ] = _D.temperature,
    history: Annotated[
        int,
        typer.Option(min=1, help="Events pooled per training example (H).", rich_help_panel=_TRAIN),
    ] = _D.history,
    session_epochs: Annotated[
        int,
        typer.Option(
            min=0,
            help="Epochs of the session model (self-attention over recent items and their time "
            "gaps, exported to session.npz); 0: none.",
            rich_help_panel=_TRAIN,
        ),
    ] = _D.session_epochs,
    half_life: Annotated[
        float | None,
        typer.Option(
            callback=_positive,
            help="Decay half-life in seconds [default: RECSYS_FOLD_HALF_LIFE_SECONDS, as the "
            "dataflow]",
            show_default=False,
            rich_help_panel=_TRAIN,
        ),
    ] = _D.half_life,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the version directory goes [default: RECSYS_MODEL_DIR]",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = _D.model_dir,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Text-embedding cache [default: RECSYS_STATE_DIR/cache]",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = _D.cache_dir,
    no_publish: Annotated[
        bool, typer.Option("--no-publish", help="Write the model dir only.", rich_help_panel=_OUT)
    ] = _D.no_publish,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="No progress output.", rich_help_panel=_OUT)
    ] = _D.quiet,
) -> None:
    code = run(TrainConfig(**locals()))  # the parameters are TrainConfig's fields
    if code:
        raise typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` as `recsys train` does and run; the exit code (2: bad options)."""
    command = typer.main.get_command(app)
    try:  # without standalone mode, a typer.Exit comes back as the return value
        result = command.main(args=argv, prog_name="recsys train", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:  # a usage error: the message, as on the command line
        if not hasattr(e, "show"):
            raise
        e.show()
        return 2
    return result if isinstance(result, int) else 0


# -----------------------------------------------------------------------------


def run(cfg: TrainConfig) -> int:
    # config ------------------------------------------------------------------
    settings = get_settings()
    args, paths = cfg, cfg.resolved(settings)
    started = time.perf_counter()
    say = _printer(args.quiet)
    seed_everything(args.seed, settings.train_threads)
    rng = np.random.default_rng(args.seed)
    weights = settings.fold.event_weights
    model_cfg = ModelConfig(dim=args.dim, temperature=args.temperature)
    fit_cfg = FitConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        history=args.history,
        half_life=paths.half_life,
    )

    # data: events and catalogue, the slice, the temporal split, text vectors ---
    try:
        source = load_source(args, paths.data_dir, settings)
    except (FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    inter, items = source.interactions, source.items
    say(f"loaded {len(inter):,} events, {len(items):,} items from {source.paths[0]}")

    inter = before(inter, args.until)
    inter, items, unknown = restrict(inter, items, args.max_users, args.max_items)
    if unknown:
        say(f"ignored {unknown:,} events on items missing from the catalogue (no vector)")
    if not len(inter):
        print(
            "error: no events left to train on (check --until, --items and the slice)",
            file=sys.stderr,
        )
        return 2
    split_ts = quantile_time(inter, 1.0 - args.holdout) if args.holdout > 0 else math.inf
    train, test = temporal_split(inter, split_ts)
    say(f"train {len(train):,} events, held out {len(test):,} from {iso(split_ts) or '-'}")

    item_ids = [i.item_id for i in items]
    text = embed_items(items, paths.cache_dir, quiet=args.quiet)

    # model -------------------------------------------------------------------
    categories, category_names = category_matrix(items)
    model = TwoTower(text, categories, id_index(train, item_ids), model_cfg)

    # fit ---------------------------------------------------------------------
    examples = build_examples(train, item_ids, weights, fit_cfg.history, fit_cfg.half_life)
    if not len(examples):
        print("error: no user has two training events; nothing to learn from", file=sys.stderr)
        return 2
    say(f"training on {len(examples):,} examples ({torch.get_num_threads()} threads)")
    losses = fit(model, examples, item_log_q(train, item_ids), fit_cfg, rng, quiet=args.quiet)
    item_vectors, head = model.item_vectors(), model.head.export()
    item_head = model.items.export_head(category_names)  # embeds items written at run time
    session, session_metrics = fit_session(args, train, test, item_ids, item_vectors, say)

    # held-out check ----------------------------------------------------------
    results: dict[str, Any] = {"train_loss": losses, "train_examples": len(examples)}
    if len(test):
        results |= holdout_check(
            train, test, item_ids, item_vectors, head, weights, fit_cfg.half_life
        )
    else:
        results |= {"recall_at_10": None, "ndcg_at_10": None, "users_evaluated": 0}
    results |= session_metrics

    # model version: profiles and seen lists from every event used -------------
    profile_users, pooled = pooled_histories(
        inter, item_ids, item_vectors, weights, fit_cfg.half_life
    )
    config = run_config(args, model_cfg, fit_cfg, weights, split_ts)
    fp = fingerprint(
        source.paths,
        {
            "source": source.kind,
            "events_loaded": len(source.interactions),
            "invalid_lines": source.invalid_lines,
            "unknown_item_events": unknown,
            "until_ts": args.until,
            "until_time": config["until_time"],
            "used": describe(inter),
            "train": describe(train),
            "holdout": describe(test),
        },
    )
    path = write_artifacts(
        paths.model_dir,
        fingerprint=fp,
        seed=args.seed,
        config=config,
        metrics=results,
        # Co-visitation from every event used, like the profiles: serving re-ranks with it.
        items=with_covisit(with_popularity(items, train), covisit_matrix(inter, item_ids)),
        item_vectors=item_vectors,
        head=head,
        item_head=item_head,
        weights=functools.partial(torch.save, model.state_dict()),
        profile_user_ids=profile_users.tolist(),
        profile_vectors=user_vectors(head, pooled),
        seen=seen_items(inter, SEEN_CAP),
        session=session,
    )

    # publish -----------------------------------------------------------------
    if not args.no_publish:
        publish_from_training(path, settings)

    print(summary(results, split_ts, path, time.perf_counter() - started))
    return 0


# -----------------------------------------------------------------------------
# helpers of main


def fit_session(
    args: TrainConfig,
    train: Interactions,
    test: Interactions,
    item_ids: list[str],
    item_vectors: np.ndarray,
    say: Callable[[str], None],
) -> tuple[SessionModel | None, dict[str, Any]]:
    """The session model on the training split (two-tower vectors as its content input),
    and its held-out next-item HR@10 over the training split's users' later events."""
    if args.session_epochs == 0:
        return None, {}
    cfg = replace(SESSION, epochs=args.session_epochs)
    say(f"session model: {cfg.blocks} self-attention block(s), {cfg.epochs} epochs")
    session, losses = train_session_model(train, item_ids, cfg, args.seed, item_vectors)
    out: dict[str, Any] = {"session_train_loss": losses}
    if len(test):
        out["session_hr_at_10"] = session_holdout_hr(session, train, test, item_ids)
    return session, out


@dataclass(frozen=True, slots=True)
class Source:
    kind: str
    interactions: Interactions
    items: list[ItemRecord]
    paths: list[Path]
    invalid_lines: int = 0


def load_source(args: TrainConfig, data_dir: Path, settings: Settings) -> Source:
    """MovieLens from --data-dir, or a product event log with its item catalogue."""
    if args.events_jsonl is None:
        inter, items = load_movielens(data_dir)
        paths = [find_file(data_dir, "inter"), find_file(data_dir, "item")]
        return Source("movielens", inter, items, paths)
    item_file = args.items or _optional_item_file(data_dir)
    known = load_items(item_file) if item_file else None
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # one summary per run, even when run twice
        inter, items, invalid = load_jsonl_events(
            args.events_jsonl, settings.fold.event_weights, known
        )
    paths = [args.events_jsonl] + ([item_file] if item_file else [])
    return Source("jsonl", inter, items, paths, len(invalid))


def _optional_item_file(data_dir: Path) -> Path | None:
    try:
        return find_file(data_dir, "item")
    except FileNotFoundError:
        warnings.warn(
            f"no item catalogue in {data_dir}; items will have no title or genres", stacklevel=2
        )
        return None


def run_config(
    args: TrainConfig,
    model_cfg: ModelConfig,
    fit_cfg: FitConfig,
    weights: Mapping[str, float],
    split_ts: float,
) -> dict[str, Any]:
    """Everything that shaped the model besides the data, for config.json."""
    return {
        "model": model_cfg.to_dict(),
        "fit": fit_cfg.to_dict(),
        "text_model": MODEL_NAME,
        "event_weights": dict(weights),
        "holdout": args.holdout,
        "split_ts": split_ts if math.isfinite(split_ts) else None,
        "split_time": iso(split_ts),
        "until_ts": args.until,
        "until_time": iso(args.until) if args.until is not None else None,
        "max_users": args.max_users,
        "max_items": args.max_items,
        "seen_cap": SEEN_CAP,
        "popularity_from": "training split",
        "threads": torch.get_num_threads(),
        "session": replace(SESSION, epochs=args.session_epochs).to_dict()
        if args.session_epochs
        else None,
    }


def summary(results: dict[str, Any], split_ts: float, path: Path, seconds: float) -> str:
    pop = results.get("popularity", {})
    if results.get("recall_at_10") is None:
        result = "Recall@10 = n/a  NDCG@10 = n/a  (no held-out events)"
    else:
        result = (
            f"Recall@10 = {results['recall_at_10']:.4f}  NDCG@10 = {results['ndcg_at_10']:.4f}  "
            f"({results['users_evaluated']} users, held-out after {(iso(split_ts) or '?')[:10]})"
        )
    lines = [
        f"trained in {seconds:.1f}s; final loss {results['train_loss'][-1]:.4f}"
        if results["train_loss"]
        else f"trained in {seconds:.1f}s",
    ]
    if pop:
        lines.append(
            f"popularity baseline: Recall@10 = {pop['recall_at_10']:.4f}  "
            f"NDCG@10 = {pop['ndcg_at_10']:.4f}"
        )
    lines += [f"model: {path}", result]
    return "\n".join(lines)


def _printer(quiet: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return say


if __name__ == "__main__":
    app(prog_name="python -m training.train")
