"""The log format a user sees: readable text on a terminal, JSON lines otherwise, and
``RECSYS_LOG_JSON`` overriding either way."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from core.settings import PROJECT_ROOT

_LOG_ONE_LINE = (
    "import logging\n"
    "from core.logs import configure_logging\n"
    "from core.settings import get_settings\n"
    "configure_logging(get_settings().log_json)\n"
    "logging.getLogger('recsys.demo').warning('disk %s full', 'var', "
    "extra={'fields': {'free_mb': 3}})\n"
)


def _env(log_json: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_LOG_JSON"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    if log_json is not None:
        env["RECSYS_LOG_JSON"] = log_json
    return env


def _stderr_piped(log_json: str | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _LOG_ONE_LINE],
        env=_env(log_json),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stderr.strip()


def _stderr_on_terminal(log_json: str | None = None) -> str:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOG_ONE_LINE],
            env=_env(log_json),
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=follower,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode().strip()


def test_a_terminal_gets_readable_text_with_the_fields():
    line = _stderr_on_terminal()
    assert "WARNING recsys.demo: disk var full free_mb=3" in line
    assert not line.startswith("{")


def test_a_pipe_gets_one_json_object_per_line():
    record = json.loads(_stderr_piped())
    assert record["level"] == "WARNING" and record["logger"] == "recsys.demo"
    assert record["msg"] == "disk var full" and record["free_mb"] == 3
    assert record["ts"].endswith("Z")


def test_the_setting_overrides_the_terminal_check_both_ways():
    assert json.loads(_stderr_on_terminal("true"))["msg"] == "disk var full"
    assert "WARNING recsys.demo: disk var full" in _stderr_piped("false")
