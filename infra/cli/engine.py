"""`recsys serve`, `api`, `broker`: running the engine's processes.

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

    When no broker answers at RECSYS_KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092) and
    that is a free loopback address, starts the dev broker there. SIGINT/SIGTERM stop it
    cleanly.

    Example: recsys serve --port 8001
    """
    _override(API_HOST=host, API_PORT=port)
    from infra.serve import StartupError
    from infra.serve import main as run

    try:
        exit_with(run())
    except StartupError as e:
        raise fail(str(e)) from None


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
    from infra.serve import StartupError, check_port_free, open_store, run_api

    cfg = settings()
    configure_logging(cfg.log_json)
    try:
        check_port_free(cfg.api.host, cfg.api.port)
        store = open_store(cfg)
    except StartupError as e:
        raise fail(str(e)) from None
    run_api(cfg, store)  # closes the store when it stops


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

    exit_with(run(action.value))
