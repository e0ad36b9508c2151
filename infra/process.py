"""Starting the service for the demo, the benchmarks and the tests, and stopping it again.

``ServeProcess`` runs ``python -m infra.serve`` (API + in-process dataflow, what
``recsys serve`` runs) as a child process with RECSYS_* overrides, its output in a log
file; entering it waits until ``GET /readyz`` answers 200, leaving it stops the process
(SIGTERM, then SIGKILL). A process that exits or is not ready in time raises
``ServiceNotReady`` with the end of its log. ``serve_in_thread`` runs an app under
uvicorn in a thread of this process instead, for tests that hand it their own settings.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import uvicorn

from infra.broker import free_port

if TYPE_CHECKING:
    from fastapi import FastAPI

LOOPBACK = "127.0.0.1"


class ServiceNotReady(RuntimeError):
    """The service exited, or did not answer /readyz in time; the message ends with its log."""


def answers_ready(host: str, port: int) -> bool:
    """True once ``GET /readyz`` answers 200 (model loaded, in-process dataflow running)."""
    conn = http.client.HTTPConnection(host, port, timeout=2.0)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServeProcess:
    """``python -m infra.serve`` as a child process, on ``port`` (default: a free one).

    The child inherits this process's environment without the ``unset`` names, then
    ``env`` and RECSYS_API_PORT (and RECSYS_API_HOST when ``host`` is given) on top.
    ``with ServeProcess(...) as s:`` starts it and waits until it is ready; ``start``,
    ``wait_ready`` and ``stop`` do the same steps one by one.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        port: int | None = None,
        host: str | None = None,
        unset: Collection[str] = (),
        ready_timeout: float = 60.0,
    ) -> None:
        self.port = port or free_port()
        self.host = LOOPBACK if host in (None, "", "0.0.0.0") else host
        self.url = f"http://{self.host}:{self.port}"
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.env = {k: v for k, v in os.environ.items() if k not in unset} | dict(env)
        self.env["RECSYS_API_PORT"] = str(self.port)
        if host is not None:
            self.env["RECSYS_API_HOST"] = host
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ServeProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.serve"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout: float | None = None) -> float:
        """Seconds until /readyz answered 200; ``ServiceNotReady`` if it exits or times out."""
        assert self.proc is not None, "start() first"
        timeout = self.ready_timeout if timeout is None else timeout
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise ServiceNotReady(
                    f"`python -m infra.serve` exited with code {self.proc.returncode} before "
                    f"it was ready; {self._log_end()}"
                )
            if answers_ready(self.host, self.port):
                return time.monotonic() - t0
            time.sleep(0.2)
        raise ServiceNotReady(
            f"`python -m infra.serve` was not ready within {timeout:.0f} s; {self._log_end()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``sig`` and wait (SIGKILL after ``timeout`` s); the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        return self.returncode

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def cpu_seconds(self) -> float:
        assert self.proc is not None, "start() first"
        return process_cpu_seconds(self.proc.pid)

    def log_text(self) -> str:
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _log_end(self, lines: int = 30) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"the last lines of its log ({self.log_path}):\n{tail}"

    def __enter__(self) -> ServeProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serve_in_thread(app: FastAPI, timeout: float = 60.0) -> Iterator[str]:
    """``app`` under uvicorn in a thread on a free loopback port; yields its base URL once
    /readyz answers 200, and shuts the server down on exit."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not answers_ready(LOOPBACK, port):
            if not thread.is_alive():
                raise ServiceNotReady(f"the server at {url} stopped before it was ready")
            if time.monotonic() > deadline:
                raise ServiceNotReady(f"the server at {url} was not ready within {timeout:.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
