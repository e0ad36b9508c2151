"""`python -m dataflow.run [-w N] [-i I -a HOST:PORT;HOST:PORT]`: the dataflow alone, with
recovery on (``just dataflow``).

``bytewax.run`` turns recovery on only when given ``-r/-s/-b``; this entry point takes
them from the settings (``RECSYS_RECOVERY_ENABLED*``, ``RECSYS_RECOVERY_EPOCH_SECONDS``) so a restart
resumes where the last one stopped instead of re-reading the topic. SIGTERM ends the
Kafka partitions, so the last batch is written and the store closed before exit.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

from core.settings import get_settings
from dataflow.flow import get_flow
from dataflow.recovery import recovery_config
from dataflow.runner import run_flow
from dataflow.source import SourceProgress
from eventlog.admin import events_log_id
from eventlog.health import KafkaWatch


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-w", "--workers-per-process", type=int, default=1)
    p.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    p.add_argument("-a", "--addresses", help='all processes: "host:port;host:port"')
    args = p.parse_args(argv)
    if (args.process_id is None) != (args.addresses is None):
        p.error("-i and -a go together")
    settings = get_settings()
    peers = None
    try:
        if args.addresses is not None:
            peers = parse_addresses(args.addresses)
        process = (args.process_id or 0, len(peers or [None]))
        recovery = recovery_config(settings, events_log_id(settings), *process)
    except ValueError as e:
        p.error(str(e))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    progress = SourceProgress(settings)  # consumer lag, from the watch's end offsets
    watch = KafkaWatch(settings)
    watch.add_listener(progress.observe)
    watch.start()
    try:
        flow = get_flow(stop, progress)
        run_flow(flow, settings, recovery, args.workers_per_process, args.process_id, peers)
    finally:
        watch.close()


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
    main()
