"""Shared fixtures. Integration tests run against the real dev broker (tansu), started
once per session on a free loopback port, and the real Qdrant engine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from infra.broker import DevBroker, free_port
from tests.helpers import isolated_settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with DevBroker(free_port(), log_path=log) as b:
        yield b.bootstrap


@pytest.fixture
def make_settings(tmp_path: Path):
    """Settings isolated per test: own state dir, and own topics when a broker is given."""
    return lambda bootstrap=None, **overrides: isolated_settings(
        tmp_path / "var", bootstrap, **overrides
    )


_status = {"exit": 0}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _status["exit"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with the run's own status once pytest has reported.

    Kafka clients that tests leave open (librdkafka threads) can crash the interpreter's
    final teardown after the summary line; that crash would then replace the run's exit
    status. Every test has finished and reported by now.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status["exit"])
