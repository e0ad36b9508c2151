"""The composition root: the API wired to what runs beside it.

``build_app(settings)`` is the app ``recsys api`` and ``recsys serve`` run: it opens the
store, loads the live model, starts one watch of Kafka for both and, when
``settings.dataflow.inprocess`` (the default on the embedded store, which only one
process may open), runs the dataflow in a background thread on that same store and hands
it to the API for ``/readyz``.

``main()`` is `just serve` (``python -m infra.serve``, ``recsys serve``): the whole
product in one process on the embedded default. It starts the dev broker on
127.0.0.1:9092 unless RECSYS_KAFKA_BOOTSTRAP_SERVERS names a broker (or one already
answers there), creates the topics (or, if the broker named does not answer yet, leaves
that to the in-process flow once it does), then serves until SIGINT/SIGTERM, and stops
what it started.
"""

from __future__ import annotations

import asyncio
import logging
import signal
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
from eventlog.admin import broker_answers, ensure_app_topics, host_port
from eventlog.health import KafkaWatch
from featurestore.store import FeatureStore
from infra.broker import DevBroker

log = logging.getLogger("infra.serve")


def build_app(settings: Settings, store: FeatureStore | None = None) -> FastAPI:
    """The API and, with ``settings.dataflow.inprocess``, the dataflow beside it.

    ``store``: serve from this open store (its owner closes it); default: open the
    configured one when the app starts and close it when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = store or await asyncio.to_thread(FeatureStore.open, settings)
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


def run_api(settings: Settings) -> None:
    """Serve ``build_app(settings)`` with uvicorn until SIGINT/SIGTERM (`recsys api`)."""
    uvicorn.run(
        build_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level="info",
        log_config=None,  # keep our (JSON) handlers
        access_log=False,  # api.access logs each request with its request id
        timeout_graceful_shutdown=10,
    )


def main() -> int:
    settings = get_settings()
    configure_logging(settings.log_json)
    broker = None
    if not settings.kafka_configured and not broker_answers(settings.kafka.bootstrap_servers):
        host, port = host_port(settings.kafka.bootstrap_servers)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        broker = DevBroker(port, host, log_path=settings.state_dir / "broker.log").start()
        log.info("started the dev broker (tansu, in memory) at %s", broker.bootstrap)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: turn
    # that into a normal exit so the broker we started is stopped below.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    try:
        if broker is not None or broker_answers(settings.kafka.bootstrap_servers):
            ensure_app_topics(settings)
        else:  # serve anyway: /readyz says why not ready, the flow creates them later
            log.warning(
                "no Kafka broker answers at %s: starting without it; the topics are created "
                "once it answers",
                settings.kafka.bootstrap_servers,
            )
        run_api(settings)
    finally:
        if broker is not None:
            broker.stop()
            log.info("stopped the dev broker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
