"""`recsys`: the operator's command line for the recommendation engine.

Each command runs an existing entry point (``infra.serve``, ``dataflow.run``,
``training.train`` ...) or talks to a running service over its HTTP API. Settings come
from ``RECSYS_*`` environment variables (``featurestore/settings.py``); the CLI adds
only ``RECSYS_API_URL`` and ``RECSYS_API_KEY``, for the commands that call the API.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from infra.cli import ops as cli_ops
from infra.cli.common import fail, settings
from infra.cli.remote import CliError

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}

app = typer.Typer(
    name="recsys",
    help="Run, feed and inspect the real-time recommendation engine.\n\n"
    "Settings come from RECSYS_* environment variables (README, Configuration); "
    "`recsys COMMAND --help` explains each command.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _override(**values: object) -> None:
    """Set RECSYS_* variables for an entry point that reads the settings itself."""
    from core.settings import get_settings

    for name, value in values.items():
        if value is not None:
            os.environ[f"RECSYS_{name.upper()}"] = str(value)
    get_settings.cache_clear()


def _exit(code: int | None) -> None:
    if code:
        raise typer.Exit(code)


# --- running the engine ---------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (RECSYS_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RECSYS_API_PORT).")] = None,
) -> None:
    """API + dataflow in one process on the embedded store (what `just serve` runs).

    Starts the dev broker on 127.0.0.1:9092 unless RECSYS_KAFKA_BOOTSTRAP_SERVERS names a
    broker or one already answers there. SIGINT/SIGTERM stop it cleanly.

    Example: recsys serve --port 8001
    """
    _override(API_HOST=host, API_PORT=port)
    from infra.serve import main as run

    _exit(run())


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (RECSYS_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RECSYS_API_PORT).")] = None,
) -> None:
    """The API alone (production: set RECSYS_QDRANT_URL; run as many replicas as needed).

    On the embedded store it also hosts the dataflow (one process may open the store).
    JSON logs with request ids; SIGTERM drains requests for up to 10 s.

    Example: RECSYS_QDRANT_URL=http://qdrant:6333 recsys api --host 0.0.0.0
    """
    _override(API_HOST=host, API_PORT=port)
    from api.observability import configure_logging
    from infra.serve import run_api

    cfg = settings()
    configure_logging(cfg.api.log_json)
    run_api(cfg)


@app.command()
def dataflow(
    workers: Annotated[
        int, typer.Option("-w", "--workers-per-process", min=1, help="Worker threads.")
    ] = 1,
    process_id: Annotated[
        int | None,
        typer.Option("-i", "--process-id", min=0, help="This process's index in a cluster."),
    ] = None,
    addresses: Annotated[
        str | None,
        typer.Option(
            "-a", "--addresses", help='Every process of the cluster: "host:port;host:port".'
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve this process's Prometheus metrics (consumer lag, fold lag...) on "
            "this port at /metrics.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The Bytewax dataflow alone, recovery on (production: set RECSYS_QDRANT_URL).

    Scale with worker threads (-w) or a process cluster (-i/-a, the same -a list on every
    process). Kafka partitions are the unit of parallelism: keep the events topic's
    partitions >= processes x workers. In a cluster each process may keep its recovery
    on its own volume: its share of RECSYS_RECOVERY_PARTITIONS (at least one per process)
    is created there on first start.

    Examples:

      recsys dataflow -w 2

      recsys dataflow -w 2 -i 0 -a "flow-0:2101;flow-1:2101"   (and -i 1 on flow-1)

      recsys dataflow -w 2 --metrics-port 9100
    """
    argv = ["-w", str(workers)]
    if (process_id is None) != (addresses is None):
        raise fail("-i and -a go together", 2)
    if process_id is not None and addresses is not None:
        from dataflow.recovery import own_partitions
        from dataflow.run import parse_addresses

        try:
            peers = parse_addresses(addresses)
            own_partitions(process_id, len(peers), settings().recovery.partitions)
        except ValueError as e:
            raise fail(str(e), 2) from None
        argv += ["-i", str(process_id), "-a", ";".join(peers)]
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    from dataflow.run import main as run

    run(argv)


class BrokerAction(StrEnum):
    run = "run"
    start = "start"
    stop = "stop"
    status = "status"


@app.command()
def broker(
    action: Annotated[
        BrokerAction, typer.Argument(help="run (foreground), start, stop, status")
    ] = (BrokerAction.run),
) -> None:
    """The dev Kafka broker (tansu, in memory) on RECSYS_KAFKA_BOOTSTRAP_SERVERS.

    Example: recsys broker start && recsys broker status
    """
    from infra.broker import main as run

    _exit(run([action.value]))


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train the two-tower and publish it (`recsys train --help` lists every option).

    Example: recsys train --until 1998-03-01T00:00:00Z --seed 7
    """
    from training.train import main as run

    _exit(run(ctx.args))


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def evaluate(ctx: typer.Context) -> None:
    """Streaming evaluation against baselines on MovieLens (`--help` for options).

    Example: recsys evaluate --tune
    """
    from training.holdout import main as run

    _exit(run(ctx.args))


app.command("eval", context_settings=PASS_THROUGH, add_help_option=False, hidden=True)(evaluate)


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def publish(ctx: typer.Context) -> None:
    """Publish a trained version from the model directory to the store (`--help`).

    Needs the store itself: with a running service on the embedded store use
    `recsys models publish` (through the API) instead.

    Example: recsys publish --version 20240101T000000Z-abc123
    """
    from featurestore.backend import StoreLocked
    from featurestore.publish import main as run

    try:
        _exit(run(ctx.args))
    except StoreLocked as e:
        raise fail(f"{e}; a running service holds it: use `recsys models publish`") from None


@app.command(context_settings=PASS_THROUGH, add_help_option=False)
def demo(ctx: typer.Context) -> None:
    """The whole loop on MovieLens 100K: broker, training, service, a live replay (`--help`).

    Example: recsys demo --user 405 --events 12 --genre Drama
    """
    from infra.demo import main as run

    _exit(run(ctx.args))


# --- replay ---------------------------------------------------------------------------


@app.command()
def replay(
    log: Annotated[
        Path | None,
        typer.Argument(
            help="JSON-lines event log (one POST /events-shaped event per line).",
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
        typer.Option(help="Events topic (default: RECSYS_KAFKA_EVENTS_TOPIC).", show_default=False),
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

    Examples:

      recsys replay events.jsonl --speed 60          (one hour of log per minute)

      recsys replay --movielens --as-fast-as-possible --limit 10000 --retime

      recsys replay events.jsonl --rate 500 --since 2024-11-07T00:00:00Z   (500 events/s)
    """
    from infra.cli import replay_command as replay_cmd

    try:
        replay_cmd.run(
            replay_cmd.Request(
                log=log,
                movielens=movielens,
                data_dir=data_dir,
                speed=_replay_speed(speed, fast, rate),
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
            )
        )
    except CliError as e:
        raise fail(str(e)) from None


def _replay_speed(speed: float | None, fast: bool, rate: float | None) -> float:
    """--as-fast-as-possible is speed 0; --rate alone paces by rate only."""
    if fast:
        return 0.0
    if speed is not None:
        return speed
    return 0.0 if rate else 1.0


# --- inspecting and preparing a running system (infra/cli_ops.py) ------------------------

app.command()(cli_ops.user)
app.add_typer(cli_ops.models_app, name="models")
app.add_typer(cli_ops.topics_app, name="topics")
app.command()(cli_ops.init)


def main() -> None:
    """Console entry point (``recsys``)."""
    app(prog_name="recsys")


if __name__ == "__main__":
    sys.exit(main())
