"""Publish a trained model version to the feature store and make it the live one.

    recsys publish                 # the version named by <model_dir>/LATEST
    recsys publish --version V     # a given version (also: roll back to it)

Items and profiles go into collections of their own version, beside the live ones; the
switch is one write of the active pointer, which serving and the dataflow follow.

Idempotent: the store writes a version's model record last, so a version whose record is
there is complete and is not written again; a publish interrupted before that is redone
from scratch by the next run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer

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
    runtime_rev = store.runtime.revision()
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
            store.publish_model(
                record,
                art.items,
                art.item_vectors,
                profiles,
                progress=bar.update,
                item_head=art.item_head,
            )
    if activate:
        store.activate(art.version)
        # Catalogue writes the dataflow put into the version live until now.
        store.catch_up_runtime_items(art.version, runtime_rev)
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


app = typer.Typer(add_completion=False, rich_markup_mode="markdown")


@app.command(
    help="Publish a trained version from the model directory to the store and make it live "
    "(also: roll back to an older one).\n\nNeeds the store itself: while a service holds the "
    "embedded store, use `recsys models publish` (through its API).",
    epilog="Example: recsys publish --version 20240101T000000Z-abc123",
)
def main(
    version: Annotated[
        str | None,
        typer.Option(
            help="Version directory name [default: the one LATEST names]", show_default=False
        ),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="Trained versions [default: RECSYS_MODEL_DIR]", show_default=False),
    ] = None,
    no_activate: Annotated[
        bool, typer.Option("--no-activate", help="Publish without switching to it.")
    ] = False,
) -> None:
    settings = get_settings()
    configure_logging(settings.log_json)
    models = model_dir or settings.model_dir
    assert models is not None  # the settings fill model_dir from the state dir
    version = version or latest_version(models)
    if version is None or not (models / version).is_dir():
        _fail(f"no trained model {version or 'LATEST'} in {models}; train one with `recsys train`")
    try:
        store = FeatureStore.open(settings)
    except StoreLocked as e:
        _fail(f"{e}; a running service holds it: use `recsys models publish`")
    except Exception as e:  # a Qdrant server that does not answer, a broken store
        _fail(f"cannot open the store: {e} (RECSYS_QDRANT_URL / RECSYS_STATE_DIR)")
    try:
        publish_model_dir(store, models / version, not no_activate, show_progress=True)
    finally:
        store.close()
    print(f"{'published' if no_activate else 'published and activated'} {version}")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


if __name__ == "__main__":
    app(prog_name="python -m featurestore.publish")
