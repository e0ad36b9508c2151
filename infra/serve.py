"""The composition root: the API wired to what runs beside it.

``build_app(settings)`` is the app ``recsys api`` and ``recsys serve`` run: it opens the
store, loads the live model, starts one watch of Kafka for both and, when
``settings.dataflow.inprocess`` (the default on the embedded store, which only one
process may open), runs the dataflow in a background thread on that same store and hands
it to the API for ``/readyz``.

``main()`` is `just serve` (``python -m infra.serve``, ``recsys serve``): the whole
product in one process on the embedded default. It checks that its port is free and
opens the store; when no broker answers at RECSYS_KAFKA_BOOTSTRAP_SERVERS (default
127.0.0.1:9092) and that is one free loopback address, it starts the dev broker there
(a remote broker that does not answer yet is waited for: the in-process flow creates the
topics once it does); then it serves until SIGINT/SIGTERM and stops what it started. An
expected reason not to start is a ``StartupError``: one line with the fix.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.lifespan import load_model, serving
from core.logs import configure_logging
from core.settings import Settings, get_settings
from dataflow.runner import DataflowThread
from eventlog.admin import broker_answers, ensure_app_topics
from eventlog.health import KafkaWatch
from featurestore.backend import StoreLocked
from featurestore.store import FeatureStore
from infra.broker import BrokerUnavailable, loopback_address, start_if_needed

log = logging.getLogger("infra.serve")


def build_app(settings: Settings, store: FeatureStore | None = None) -> FastAPI:
    """The API and, with ``settings.dataflow.inprocess``, the dataflow beside it.

    ``store``: serve from this open store (its owner closes it); default: open the
    configured one when the app starts and close it when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = store if store is not None else await asyncio.to_thread(FeatureStore.open, settings)
        kafka = KafkaWatch(settings).start()
        try:
            catalogs = await load_model(settings, st)
            flow = None
            if settings.dataflow.inprocess:
                flow = DataflowThread(settings, st, catalogs, kafka=kafka).start()
            try:
                async with serving(app, settings, st, catalogs, flow, kafka):
                    yield
            finally:
                if flow is not None:
                    await asyncio.to_thread(flow.stop)
        finally:
            kafka.close()
            if store is None:
                st.close()
            log.info("stopped cleanly")

    return create_app(settings, lifespan=lifespan)


def run_api(settings: Settings, store: FeatureStore | None = None) -> None:
    """Serve ``build_app(settings, store)`` with uvicorn until SIGINT/SIGTERM (`recsys api`)."""
    uvicorn.run(
        build_app(settings, store),
        host=settings.api.host,
        port=settings.api.port,
        log_level="info",
        log_config=None,  # keep our (JSON) handlers
        access_log=False,  # api.access logs each request with its request id
        timeout_graceful_shutdown=10,
    )


class StartupError(RuntimeError):
    """An expected reason not to start (port in use, store held): one line with the fix."""


def main() -> int:
    settings = get_settings()
    configure_logging(settings.log_json)
    check_port_free(settings.api.host, settings.api.port)
    store = open_store(settings)
    try:
        broker = start_if_needed(settings)
    except BrokerUnavailable as e:
        if loopback_address(settings.kafka.bootstrap_servers) is not None:
            store.close()
            raise StartupError(str(e)) from None
        # a remote broker may come later: serve, /readyz says why not ready until then
        log.warning("%s; starting without it, the topics are created once it answers", e)
        broker = None
    if broker is not None:
        log.info("started the dev broker (tansu, in memory) at %s", broker.bootstrap)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: turn
    # that into a normal exit so the broker we started is stopped below.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    try:
        if broker is not None or broker_answers(settings.kafka.bootstrap_servers):
            ensure_app_topics(settings)
        run_api(settings, store)
    finally:
        store.close()
        if broker is not None:
            broker.stop()
            log.info("stopped the dev broker")
    return 0


def check_port_free(host: str, port: int) -> None:
    """Raise StartupError if the API's address is taken (another `recsys serve`?)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise StartupError(
                f"cannot listen on {host}:{port} ({e.strerror}): another `recsys serve`? Stop "
                "it, or pick a free port with --port (RECSYS_API_PORT)"
            ) from None


def open_store(settings: Settings) -> FeatureStore:
    """The configured store, or StartupError saying who holds it or why it cannot open."""
    try:
        return FeatureStore.open(settings)
    except StoreLocked as e:
        raise StartupError(
            f"{e}: another `recsys serve` (or `recsys api`) holds it; stop it, or give this one "
            "its own RECSYS_STATE_DIR"
        ) from None
    except Exception as e:  # a Qdrant server that does not answer, a broken store
        raise StartupError(
            f"cannot open the store: {e} (RECSYS_QDRANT_URL / RECSYS_STATE_DIR)"
        ) from None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StartupError as e:
        sys.exit(f"error: {e}")
