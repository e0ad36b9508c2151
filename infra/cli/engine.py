"""`recsys serve`, `api`, `dataflow`, `broker`, `demo`: running the engine's processes.

Each command imports what it runs inside its function (CLI start-up time, see ``infra.cli``).
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer

from core.settings import get_settings
from infra.cli.common import exit_with, fail, settings


def _override(**values: object) -> None:
    """Set RECSYS_* variables for an entry point that reads the settings itself."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"RECSYS_{name.upper()}"] = str(value)
    get_settings.cache_clear()


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

    exit_with(run())


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
    from core.logs import configure_logging
    from infra.serve import run_api

    cfg = settings()
    configure_logging(cfg.log_json)
    run_api(cfg)


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


def broker(
    action: Annotated[
        BrokerAction, typer.Argument(help="run (foreground), start, stop, status")
    ] = (BrokerAction.run),
) -> None:
    """The dev Kafka broker (tansu, in memory) on RECSYS_KAFKA_BOOTSTRAP_SERVERS.

    Example: recsys broker start && recsys broker status
    """
    from infra.broker import main as run

    exit_with(run([action.value]))


def demo(ctx: typer.Context) -> None:
    """The whole loop on MovieLens 100K: broker, training, service, a live replay (`--help`).

    Example: recsys demo --user 405 --events 12 --genre Drama
    """
    from infra.demo import main as run

    exit_with(run(ctx.args))
