"""Shared fixtures. Integration tests run against the real dev broker (tansu), started
once per session on a free loopback port, and the real Qdrant engine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Every service a test starts (in-process or as a subprocess) would load the text encoder
# in the background; the tests that write items ask for it themselves.
os.environ.setdefault("RECSYS_CATALOG_WARM_ENCODER", "false")

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


@pytest.fixture(params=["edge", "server"])
def store(request, tmp_path):
    """An empty feature store on each adapter: embedded Qdrant Edge, and qdrant-client's
    ":memory:" mode, which speaks the server API."""
    from qdrant_client import QdrantClient

    from featurestore import FeatureStore
    from featurestore.edge import EdgeBackend
    from featurestore.server import ServerBackend

    if request.param == "edge":
        s = FeatureStore(EdgeBackend(tmp_path / "store"))
    else:
        s = FeatureStore(ServerBackend(QdrantClient(":memory:")))
    yield s
    s.close()
