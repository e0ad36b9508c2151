"""`recsys dataflow [-w N] [-i I -a HOST:PORT;HOST:PORT]` (``python -m dataflow.run``): the
dataflow alone, with recovery on (``just dataflow``).

``bytewax.run`` turns recovery on only when given ``-r/-s/-b``; this entry point takes
them from the settings (``RECSYS_RECOVERY_ENABLED*``, ``RECSYS_RECOVERY_EPOCH_SECONDS``) so a restart
resumes where the last one stopped instead of re-reading the topic. SIGTERM ends the
Kafka partitions, so the last batch is written and the store closed before exit.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from prometheus_client import start_http_server

from core.settings import Settings, get_settings
from dataflow.flow import get_flow
from dataflow.recovery import own_partitions, recovery_config
from dataflow.runner import run_flow
from dataflow.source import SourceProgress
from eventlog.admin import broker_answers, events_log_id
from eventlog.health import KafkaWatch

app = typer.Typer(add_completion=False, rich_markup_mode="markdown")

EXAMPLES = """Examples:

  recsys dataflow -w 2

  recsys dataflow -w 2 -i 0 -a "flow-0:2101;flow-1:2101"   (and -i 1 on flow-1)

  recsys dataflow -w 2 --metrics-port 9100"""


@app.command(epilog=EXAMPLES)
def main(
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
    """
    settings = get_settings()
    peers = cluster(process_id, addresses, settings)
    require_broker(settings)
    process = (process_id or 0, len(peers or [None]))
    recovery = recovery_config(settings, events_log_id(settings), *process)
    if metrics_port is not None:
        start_http_server(metrics_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    progress = SourceProgress(settings)  # consumer lag, from the watch's end offsets
    watch = KafkaWatch(settings)
    watch.add_listener(progress.observe)
    watch.start()
    try:
        flow = get_flow(stop, progress)
        run_flow(flow, settings, recovery, workers, process_id, peers)
    finally:
        watch.close()


def cluster(process_id: int | None, addresses: str | None, settings: Settings) -> list[str] | None:
    """The peers of ``-a``, checked with ``-i`` against the recovery partitions when
    recovery is on (before Kafka is asked anything); None for a single process."""
    if (process_id is None) != (addresses is None):
        raise typer.BadParameter("-i and -a go together")
    try:
        peers = parse_addresses(addresses) if addresses is not None else None
        if settings.recovery.enabled:
            own_partitions(process_id or 0, len(peers or [None]), settings.recovery.partitions)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return peers


def require_broker(settings: Settings) -> None:
    """One broker named and it does not answer: say so in one line and exit, instead of
    waiting on it silently (a list of brokers is left to the Kafka client)."""
    bootstrap = settings.kafka.bootstrap_servers
    if "," not in bootstrap and not broker_answers(bootstrap, timeout=5):
        typer.secho(
            f"error: no Kafka broker answers at {bootstrap} (RECSYS_KAFKA_BOOTSTRAP_SERVERS): "
            "start it (on loopback: `recsys broker start`) or point the variable at one",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(1)


def parse_addresses(addresses: str) -> list[str]:
    """``"host:port;host:port"`` (Bytewax's form; commas are accepted too) as a list."""
    parts = [a.strip() for a in addresses.replace(",", ";").split(";") if a.strip()]
    for a in parts:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {a!r} is not host:port")
    if len(set(parts)) != len(parts):
        raise ValueError(f"addresses repeat: {addresses!r}")
    return parts


if __name__ == "__main__":
    app(prog_name="python -m dataflow.run")
