"""`recsys user`, `recsys models ...`, `recsys topics create`, `recsys init`: looking at and
preparing a running system, through its HTTP API or, when none answers, directly."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from infra.cli.common import ApiKey, ApiUrl, fail, settings, url_path
from infra.cli.remote import ApiClient, ApiUnreachable, CliError, default_api_url

models_app = typer.Typer(
    help="Published model versions: list, publish, activate (roll back).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
topics_app = typer.Typer(
    help="Kafka topics the engine uses.", no_args_is_help=True, rich_markup_mode="markdown"
)


# --- inspecting a running system --------------------------------------------------------


def user(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    recommendations: Annotated[
        bool, typer.Option("--recs", "-r", help="Also show their current recommendations.")
    ] = False,
    k: Annotated[int, typer.Option("-k", min=1, help="How many recommendations.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A user's real-time features (GET /users/{id}) from the running service.

    Example: recsys user 405 --recs -k 5
    """
    from infra.cli.remote import format_user

    url = api_url or default_api_url(settings())
    try:
        with ApiClient(url, api_key) as client:
            features = client.get(f"/users/{url_path(user_id)}")
            recs = (
                client.get(f"/recommendations/{url_path(user_id)}", k=k)
                if recommendations
                else None
            )
    except CliError as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps({"user": features, "recommendations": recs}, indent=2))
    else:
        typer.echo(format_user(features, recs))


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
    via_api: Any,
    via_store: Any,
) -> dict[str, Any]:
    """Through the API; when nothing answers at the default URL, the store directly."""
    if not direct:
        try:
            with ApiClient(api_url or default_api_url(settings()), api_key) as client:
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
    """Published versions and the active one (* marks it).

    Example: RECSYS_API_KEY=... recsys models list
    """
    from infra.cli.remote import format_models

    try:
        overview = _models_call(
            api_url, api_key, store, lambda c: c.get("/admin/models"), lambda s: s.models_overview()
        )
    except CliError as e:
        raise fail(str(e)) from None
    typer.echo(json.dumps(overview, indent=2) if as_json else format_models(overview))


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
    from infra.cli.remote import format_models

    try:
        overview = _models_call(
            api_url,
            api_key,
            store,
            lambda c: c.post(f"/admin/models/{url_path(version)}/activate"),
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
    from infra.cli.remote import format_models

    try:
        overview = _models_call(
            api_url,
            api_key,
            store,
            lambda c: c.post("/admin/models/publish", {"version": version, "activate": activate}),
            lambda s: registry.publish(s, settings(), version, activate),
        )
    except CliError as e:
        raise fail(str(e)) from None
    typer.echo(format_models(overview))


# --- deployment helpers -------------------------------------------------------------------


@topics_app.command("create")
def topics_create(
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Partitions per topic (default: RECSYS_KAFKA_TOPIC_PARTITIONS).",
            show_default=False,
        ),
    ] = None,
    replication_factor: Annotated[
        int, typer.Option(min=1, help="Copies of each partition (3 on a 3-broker cluster).")
    ] = 1,
) -> None:
    """Create the events, dead-letter and impressions topics if missing.

    Existing topics are left as they are (Kafka cannot shrink partitions; add them with
    kafka-topics --alter, knowing it moves users between partitions).

    Example: recsys topics create --partitions 8 --replication-factor 3
    """
    from infra.cli import registry

    try:
        created = registry.create_topics(settings(), partitions, replication_factor)
    except CliError as e:
        raise fail(str(e)) from None
    for name, n in created.items():
        typer.echo(f"{name}: {n} partitions" if n else f"{name}: exists, left as it is")


def init(
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Partitions per topic (default: RECSYS_KAFKA_TOPIC_PARTITIONS).",
            show_default=False,
        ),
    ] = None,
    replication_factor: Annotated[int, typer.Option(min=1, help="Copies of each partition.")] = 1,
    train_if_missing: Annotated[
        bool, typer.Option(help="Train on RECSYS_DATA_DIR when the model directory is empty.")
    ] = True,
) -> None:
    """Prepare a deployment: create the topics, then make sure a model is live.

    Publishes and activates LATEST from the model directory when no version is active
    (an active one, e.g. after a rollback, is left as it is); trains one first when the
    directory holds none. Safe to run at every start.

    Example: recsys init --partitions 8 --replication-factor 3
    """
    topics_create(partitions, replication_factor)
    from infra.cli import registry

    try:
        typer.echo(registry.ensure_live_model(settings(), train_if_missing))
    except CliError as e:
        raise fail(str(e)) from None
