"""Publish a trained model version to the feature store and make it the live one.

    python -m featurestore.publish                 # the version named by <model_dir>/LATEST
    python -m featurestore.publish --version V     # a given version (also: roll back to it)

Items and profiles go into collections of their own version, beside the live ones; the
switch is one write of the active pointer, which serving and the dataflow follow.

Idempotent: the store writes a version's model record last, so a version whose record is
there is complete and is not written again; a publish interrupted before that is redone
from scratch by the next run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.artifacts import latest_version, load_artifacts
from core.logs import configure_logging
from core.progress import Progress
from core.records import ModelRecord, Profile
from core.settings import Settings, get_settings
from featurestore.backend import StoreLocked
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)


def publish_model_dir(
    store: FeatureStore, path: Path, activate: bool = True, show_progress: bool = False
) -> str:
    art = load_artifacts(path)
    if store.model(art.version) is None:
        record = ModelRecord(
            version=art.version,
            dim=art.dim,
            created_at=art.created_at,
            head=art.head,
            metrics={k: v for k, v in art.metrics.items() if isinstance(v, (int, float, str))},
        )
        profiles = [
            Profile(uid, vec, art.seen.get(uid, []))
            for uid, vec in zip(art.profile_user_ids, art.profile_vectors, strict=True)
        ]
        total = len(art.items) + len(profiles)
        with Progress(total, f"publish {art.version}", "pt", quiet=not show_progress) as bar:
            store.publish_model(record, art.items, art.item_vectors, profiles, progress=bar.update)
    if activate:
        store.activate(art.version)
    return art.version


def publish_from_training(path: Path, settings: Settings) -> None:
    """Called at the end of training. With the embedded store held by a running server,
    that server publishes the new version itself (it watches <model_dir>/LATEST)."""
    try:
        store = FeatureStore.open(settings)
    except StoreLocked:
        print(
            f"The embedded store is held by a running server; it publishes {path.name} "
            f"from {path.parent} within {settings.api.model_poll_seconds:.0f}s."
        )
        return
    try:
        version = publish_model_dir(store, path, activate=True, show_progress=True)
        print(f"Published and activated model {version}.")
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    configure_logging(settings.log_json)
    p = argparse.ArgumentParser(
        prog="python -m featurestore.publish", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model-dir", type=Path, default=settings.model_dir)
    p.add_argument("--version", help="version directory name (default: LATEST)")
    p.add_argument("--no-activate", action="store_true", help="publish without switching to it")
    args = p.parse_args(argv)
    version = args.version or latest_version(args.model_dir)
    if version is None:
        print(f"no model in {args.model_dir}; train one with `just train`", file=sys.stderr)
        return 2
    store = FeatureStore.open(settings)
    try:
        publish_model_dir(store, args.model_dir / version, not args.no_activate, show_progress=True)
    finally:
        store.close()
    print(f"{'published' if args.no_activate else 'published and activated'} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
