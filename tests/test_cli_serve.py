"""`recsys serve` and `recsys broker` as an operator meets them: a loopback Kafka address
gets its dev broker, an expected reason not to start is one line with the fix, and a
stopped broker leaves no defunct process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import get_settings
from eventlog.admin import broker_answers
from featurestore import FeatureStore
from infra.broker import free_port
from infra.cli import app
from infra.process import ServeProcess
from tests.helpers import publish

runner = CliRunner()


def serve_once(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m infra.serve` (what `recsys serve` runs) until it exits by itself."""
    return subprocess.run(
        [sys.executable, "-m", "infra.serve"],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state dir whose embedded store serves a published model."""
    state = tmp_path / "var"
    os.environ["RECSYS_STATE_DIR"] = str(state)
    get_settings.cache_clear()
    try:
        store = FeatureStore.open(get_settings())
        publish(store, n=40, dim=8)
        store.close()
    finally:
        del os.environ["RECSYS_STATE_DIR"]
        get_settings.cache_clear()
    return state


def test_serve_starts_the_dev_broker_on_a_loopback_kafka_address(state, tmp_path):
    bootstrap = f"127.0.0.1:{free_port()}"
    env = {"RECSYS_STATE_DIR": str(state), "RECSYS_KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    with ServeProcess(env, tmp_path / "serve.log", ready_timeout=120) as server:
        assert broker_answers(bootstrap)
        assert "started the dev broker" in server.log_text()
    assert not broker_answers(bootstrap, timeout=1)  # stopped with the service


def test_a_port_in_use_is_one_line_with_the_fix(state):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_once({"RECSYS_STATE_DIR": str(state), "RECSYS_API_PORT": str(port)})
    line = one_error_line(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line


def test_a_store_held_by_another_service_is_one_line_with_the_fix(state, tmp_path):
    env = {
        "RECSYS_STATE_DIR": str(state),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    with ServeProcess(env, tmp_path / "first.log", ready_timeout=120):
        result = serve_once(env | {"RECSYS_API_PORT": str(free_port())})
    line = one_error_line(result)
    assert "holds it" in line and "RECSYS_STATE_DIR" in line


def test_broker_start_status_stop_leaves_no_defunct_process(tmp_path, monkeypatch):
    bootstrap = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RECSYS_STATE_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["broker", "start"])
        assert result.exit_code == 0, result.output
        pid = int((tmp_path / "var" / "broker.pid").read_text())
        result = runner.invoke(app, ["broker", "status"])
        assert result.exit_code == 0 and f"broker at {bootstrap}: up" in result.output
        result = runner.invoke(app, ["broker", "stop"])
        assert result.exit_code == 0 and f"stopped dev broker (pid {pid})" in result.output
        assert not Path(f"/proc/{pid}").exists()  # gone and reaped, not defunct
        result = runner.invoke(app, ["broker", "status"])
        assert (
            result.exit_code == 1
            and "down (start the dev broker: recsys broker start)" in result.output
        )
    finally:
        get_settings.cache_clear()
