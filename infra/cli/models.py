"""`recsys models ...`: the published model versions, through the running service's API
or, when none answers, on the store directly.

The store is imported inside the commands (CLI start-up time, see ``infra.cli``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from client import ModelsOverview, RecsysClient
from infra.cli.common import ApiKey, ApiUrl, fail, settings
from infra.cli.remote import ApiUnreachable, CliError, api_client, default_api_url, format_models

if TYPE_CHECKING:  # the store is opened only when the API does not answer
    from featurestore.store import FeatureStore

models_app = typer.Typer(
    help="Published model versions: list (a read key, or none), publish, activate, roll "
    "back (an admin key).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


# --- the model registry -------------------------------------------------------------------


StoreOpt = Annotated[
    bool,
    typer.Option(
        "--store",
        help="Use the store directly instead of the API (no service may hold an embedded store).",
    ),
]


def _models_call(
    api_url: str | None,
    api_key: str | None,
    direct: bool,
    scope: str,
    via_api: Callable[[RecsysClient], ModelsOverview],
    via_store: Callable[[FeatureStore], ModelsOverview],
) -> ModelsOverview:
    """Through the API; when nothing answers at the default URL, the store directly."""
    if not direct:
        try:
            with api_client(api_url or default_api_url(settings()), api_key, scope) as client:
                return via_api(client)
        except ApiUnreachable as e:
            if api_url is not None:
                raise
            typer.secho(f"{e}\nReading the store directly.", err=True, fg=typer.colors.YELLOW)
    from infra.cli import registry

    with registry.open_store(settings()) as store:
        return via_store(store)


@models_app.command("list")
def models_list(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    store: StoreOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Published versions (* marks the active one) with their training date and held-out
    Recall@10 beside popularity's, through GET /models: a read key, or none while the
    server has no read keys.

    Example: recsys models list
    """
    from infra.cli import registry

    try:
        overview = _models_call(
            api_url, api_key, store, "read", RecsysClient.models, registry.overview
        )
    except CliError as e:
        raise fail(str(e)) from None
    typer.echo(overview.model_dump_json(indent=2) if as_json else format_models(overview))


@models_app.command("activate")
def models_activate(
    version: Annotated[str, typer.Argument(help="A published version (see `recsys models list`).")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    store: StoreOpt = False,
) -> None:
    """Make a published version live; serving and the dataflow follow within seconds.

    Example: recsys models activate 20240101T000000Z-abc123
    """
    from infra.cli import registry

    try:
        overview = _models_call(
            api_url,
            api_key,
            store,
            "admin",
            lambda c: c.activate(version),
            lambda s: registry.activate(s, version),
        )
    except CliError as e:
        raise fail(str(e)) from None
    typer.echo(format_models(overview))


@models_app.command("rollback")
def models_rollback(
    version: Annotated[str, typer.Argument(help="The older published version to go back to.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    store: StoreOpt = False,
) -> None:
    """Roll back: activate an older published version (same as `models activate`).

    Example: recsys models rollback 20231201T000000Z-def456
    """
    models_activate(version, api_url, api_key, store)


@models_app.command("publish")
def models_publish(
    version: Annotated[
        str | None, typer.Option(help="Version directory (default: LATEST).", show_default=False)
    ] = None,
    activate: Annotated[bool, typer.Option(help="Switch serving to it.")] = True,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    store: StoreOpt = False,
) -> None:
    """Publish a trained version from the model directory (through the running service).

    Example: recsys models publish --no-activate
    """
    from infra.cli import registry

    try:
        overview = _models_call(
            api_url,
            api_key,
            store,
            "admin",
            lambda c: c.publish(version, activate),
            lambda s: registry.publish(s, settings(), version, activate),
        )
    except CliError as e:
        raise fail(str(e)) from None
    typer.echo(format_models(overview))
