"""``python -m training.train``: load -> split -> embed text -> fit -> held-out check ->
write the model version -> publish.

One run produces one versioned model directory (see ``core.artifacts``) with item
vectors, the user head, long-term profiles and the held-out ranking quality, then
publishes it to the feature store unless ``--no-publish``. The same seed on the same data
gives the same model.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
# config: every option, its default from the settings or the model/fit configs

_FIT, _MODEL = FitConfig(), ModelConfig()


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("input")
    src.add_argument(
        "--data-dir",
        type=Path,
        default=settings.data_dir,
        help="MovieLens dir with *.inter and *.item (default: %(default)s)",
    )
    src.add_argument("--events-jsonl", type=Path, help="train on a JSON-lines event log instead")
    src.add_argument("--items", type=Path, help="MovieLens-style .item file for --events-jsonl")
    src.add_argument(
        "--until",
        type=_time_arg,
        help="use only events strictly before this time (ISO-8601 with zone, or unix seconds)",
    )
    src.add_argument("--max-users", type=int, help="deterministic slice: first N user ids")
    src.add_argument("--max-items", type=int, help="deterministic slice: N most used items")

    tr = p.add_argument_group("training")
    tr.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of the latest events held out for the held-out check (0: none)",
    )
    tr.add_argument("--seed", type=int, default=42)
    tr.add_argument("--epochs", type=int, default=_FIT.epochs)
    tr.add_argument("--batch-size", type=int, default=_FIT.batch_size)
    tr.add_argument("--dim", type=int, default=_MODEL.dim)
    tr.add_argument("--lr", type=float, default=_FIT.lr)
    tr.add_argument("--weight-decay", type=float, default=_FIT.weight_decay)
    tr.add_argument("--temperature", type=float, default=_MODEL.temperature)
    tr.add_argument(
        "--history", type=int, default=_FIT.history, help="events pooled per training example (H)"
    )
    tr.add_argument(
        "--session-epochs",
        type=int,
        default=SESSION.epochs,
        help="epochs of the session model (self-attention over recent items and their time "
        "gaps, exported to session.npz); 0: none",
    )
    tr.add_argument(
        "--half-life",
        type=float,
        default=settings.fold.half_life_seconds,
        help="decay half-life in seconds (default: settings, as the dataflow)",
    )

    out = p.add_argument_group("output")
    out.add_argument("--model-dir", type=Path, default=settings.model_dir)
    out.add_argument(
        "--cache-dir",
        type=Path,
        default=settings.state_dir / "cache",
        help="text-embedding cache (default: %(default)s)",
    )
    out.add_argument("--no-publish", action="store_true", help="write the model dir only")
    out.add_argument("--quiet", action="store_true", help="no progress output")
    return _checked(p, p.parse_args(argv))


def _checked(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if not 0.0 <= args.holdout < 1.0:
        p.error("--holdout must be in [0, 1)")
    if args.session_epochs < 0:
        p.error("--session-epochs must be >= 0")
    for name in ("epochs", "batch_size", "dim", "history", "max_users", "max_items"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not (args.half_life > 0 and args.temperature > 0):
        p.error("--half-life and --temperature must be > 0")
    return args


# -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    # config ------------------------------------------------------------------
    settings = get_settings()
    args = parse_args(argv, settings)
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
        half_life=args.half_life,
    )

    # data: events and catalogue, the slice, the temporal split, text vectors ---
    try:
        source = load_source(args, settings)
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
    text = embed_items(items, args.cache_dir, quiet=args.quiet)

    # model -------------------------------------------------------------------
    model = TwoTower(text, category_matrix(items)[0], id_index(train, item_ids), model_cfg)

    # fit ---------------------------------------------------------------------
    examples = build_examples(train, item_ids, weights, fit_cfg.history, fit_cfg.half_life)
    if not len(examples):
        print("error: no user has two training events; nothing to learn from", file=sys.stderr)
        return 2
    say(f"training on {len(examples):,} examples ({torch.get_num_threads()} threads)")
    losses = fit(model, examples, item_log_q(train, item_ids), fit_cfg, rng, quiet=args.quiet)
    item_vectors, head = model.item_vectors(), model.head.export()
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
        args.model_dir,
        fingerprint=fp,
        seed=args.seed,
        config=config,
        metrics=results,
        # Co-visitation from every event used, like the profiles: serving re-ranks with it.
        items=with_covisit(with_popularity(items, train), covisit_matrix(inter, item_ids)),
        item_vectors=item_vectors,
        head=head,
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
    args: argparse.Namespace,
    train: Interactions,
    test: Interactions,
    item_ids: list[str],
    item_vectors: np.ndarray,
    say,
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


def load_source(args: argparse.Namespace, settings: Settings) -> Source:
    """MovieLens from --data-dir, or a product event log with its item catalogue."""
    if args.events_jsonl is None:
        inter, items = load_movielens(args.data_dir)
        paths = [find_file(args.data_dir, "inter"), find_file(args.data_dir, "item")]
        return Source("movielens", inter, items, paths)
    item_file = args.items or _optional_item_file(args.data_dir)
    items = load_items(item_file) if item_file else None
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # one summary per run, even when run twice
        inter, items, invalid = load_jsonl_events(
            args.events_jsonl, settings.fold.event_weights, items
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
    args: argparse.Namespace,
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
            f"({results['users_evaluated']} users, held-out after {iso(split_ts)[:10]})"
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


def _time_arg(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _printer(quiet: bool):
    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return say


if __name__ == "__main__":
    sys.exit(main())
