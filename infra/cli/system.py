"""`recsys replay`, `user` (show, delete), `topics create`, `init`: feeding, inspecting,
erasing from and preparing a running system (its Kafka topics, its service's API, its
store).

The replay machinery and the store are imported inside the commands (CLI start-up time, see
``infra.cli``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from infra.cli.common import ApiKey, ApiUrl, fail, settings
from infra.cli.remote import CliError, api_client, default_api_url, format_erasure, format_user

if TYPE_CHECKING:  # Typer's groups take the Context of the click it vendors
    from typer._click import Context as ClickContext

ERASE_TIMEOUT_SECONDS = 30.0
"""The service waits for Kafka's acknowledgement of the marker (up to ~15 s when Kafka is
slow) before it answers."""

topics_app = typer.Typer(
    help="Kafka topics the engine uses.", no_args_is_help=True, rich_markup_mode="markdown"
)


# --- feeding it ---------------------------------------------------------------------------


def replay(
    log: Annotated[
        Path | None,
        typer.Argument(
            help="JSON-lines event log (one POST /events-shaped event per line).",
            show_default=False,
        ),
    ] = None,
    items: Annotated[
        Path | None,
        typer.Option(
            "--items",
            help="A JSON-lines file of catalogue writes (one items-topic message per line: "
            '{"op": "upsert"|"patch"|"delete", "item_id": ...}) to send to the items topic '
            "instead of events.",
            show_default=False,
        ),
    ] = None,
    movielens: Annotated[
        bool,
        typer.Option("--movielens", help="Replay MovieLens ratings from --data-dir instead."),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="MovieLens directory (default: RECSYS_DATA_DIR).", show_default=False),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Divide the log's time gaps by this (60: an hour per minute; 0: no waiting). "
            "Default: 1, or 0 when --rate is given.",
            show_default=False,
        ),
    ] = None,
    fast: Annotated[bool, typer.Option("--as-fast-as-possible", help="Same as --speed 0.")] = False,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="At most this many events per second.")
    ] = None,
    retime: Annotated[
        bool,
        typer.Option(
            "--retime",
            help="Stamp each event with the time it is sent, so the flow treats it as live.",
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option(min=0, help="Send at most this many events.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only events at or after this time (ISO-8601 with zone, or unix s)."),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only events before this time.")] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Check the whole log first; send nothing if a line is invalid."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and report; send nothing.")
    ] = False,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(help="Kafka (default: RECSYS_KAFKA_BOOTSTRAP_SERVERS).", show_default=False),
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(
            help="Events topic (default: RECSYS_KAFKA_EVENTS_TOPIC; with --items, the items "
            "topic, default RECSYS_KAFKA_ITEMS_TOPIC).",
            show_default=False,
        ),
    ] = None,
    dead_letter_topic: Annotated[
        str | None,
        typer.Option(
            help="Where invalid lines go (default: RECSYS_KAFKA_DEAD_LETTER_TOPIC).",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Replay an event log into the Kafka events topic with its original time gaps.

    Events are keyed by user_id (as the API produces them), so each user's events stay
    in order on one partition. Every line is checked against the event contract; an
    invalid line goes to the dead-letter topic with the reason in its headers (dlq.reason,
    dlq.kind, dlq.source = FILE:LINE), like the dataflow's rejects, and is reported at the
    end; --strict refuses the whole log instead.

    With --items FILE, the file holds catalogue writes (what POST/PATCH/DELETE /items
    produce); each line is checked with the items contract and the valid ones go to the
    items topic keyed by item id, in file order; an invalid line is reported with its line
    number and reason and not sent.

    Examples:

      recsys replay events.jsonl --speed 60          (one hour of log per minute)

      recsys replay --movielens --as-fast-as-possible --limit 10000 --retime

      recsys replay events.jsonl --rate 500 --since 2024-11-07T00:00:00Z   (500 events/s)

      recsys replay --items catalogue.jsonl
    """
    from infra.cli import replay_command as replay_cmd

    try:
        replay_cmd.run(
            replay_cmd.Request(
                log=log,
                movielens=movielens,
                data_dir=data_dir,
                speed=replay_speed(speed, fast, rate),
                rate=rate,
                retime=retime,
                limit=limit,
                since=since,
                until=until,
                strict=strict,
                dry_run=dry_run,
                bootstrap_servers=bootstrap_servers,
                topic=topic,
                dead_letter_topic=dead_letter_topic,
                quiet=quiet,
                items=items,
            )
        )
    except CliError as e:
        raise fail(str(e)) from None


def replay_speed(speed: float | None, fast: bool, rate: float | None) -> float:
    """--as-fast-as-possible is speed 0; --rate alone paces by rate only."""
    if fast:
        return 0.0
    if speed is not None:
        return speed
    return 0.0 if rate else 1.0


# --- inspecting it ------------------------------------------------------------------------


class _UserCommands(TyperGroup):
    """`recsys user ID` is `recsys user show ID`: a first argument that names no command
    is a user id."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["show", *args]
        return super().parse_args(ctx, args)


user_app = typer.Typer(
    cls=_UserCommands,
    help="A user, through the running service: `recsys user ID` shows their real-time "
    "features (`show`), `recsys user delete ID` erases them (admin key). A user whose "
    "id is `show` or `delete`: `recsys user show ID`.\n\n"
    "Example: recsys user 405 --recs",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@user_app.command("show")
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
    url = api_url or default_api_url(settings())
    try:
        with api_client(url, api_key, "read") as client:
            features = client.user(user_id).model_dump(mode="json")
            recs = client.recommend(user_id, k).model_dump(mode="json") if recommendations else None
    except CliError as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps({"user": features, "recommendations": recs}, indent=2))
    else:
        typer.echo(format_user(features, recs))


@user_app.command("delete")
def user_delete(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Erase a user (GDPR Art. 17) through the running service: DELETE /users/{id}.

    Needs an admin key. Removes the user's real-time features, their long-term profile
    in every model version and the state the dataflow holds, and records an erasure
    marker on the events topic, so a replay of the topic does not bring them back. Safe
    to repeat; events sent afterwards start a new user. The README (Erasure) says what
    stays in Kafka and how to purge it.

    Example: recsys user delete 405 --api-key "$ADMIN_KEY"
    """
    url = api_url or default_api_url(settings())
    try:
        with api_client(url, api_key, "admin", timeout=ERASE_TIMEOUT_SECONDS) as client:
            erased = client.delete_user(user_id).model_dump(mode="json")
    except CliError as e:
        raise fail(str(e)) from None
    typer.echo(json.dumps(erased, indent=2) if as_json else format_erasure(erased))


# --- preparing a deployment ---------------------------------------------------------------


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
    """Create the events, items (catalogue writes), dead-letter and impressions topics if
    missing.

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
