"""`just serve`: the whole product in one process on the embedded default.

Starts the dev broker on 127.0.0.1:9092 unless RECSYS_KAFKA_BOOTSTRAP_SERVERS names a
broker (or one already answers there), creates the topics, then serves the API with
the dataflow in-process until SIGINT/SIGTERM, and stops what it started.
"""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from api.app import create_app
from api.observability import configure_logging
from core.settings import get_settings
from eventlog.admin import broker_answers, ensure_app_topics, host_port
from infra.broker import DevBroker

log = logging.getLogger("infra.serve")


def main() -> int:
    settings = get_settings()
    configure_logging(settings.api.log_json)
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
        ensure_app_topics(settings)
        uvicorn.run(
            create_app(settings),
            host=settings.api.host,
            port=settings.api.port,
            log_level="info",
            log_config=None,  # keep our (JSON) handlers
            access_log=False,  # api.access logs each request with its request id
            timeout_graceful_shutdown=10,
        )
    finally:
        if broker is not None:
            broker.stop()
            log.info("stopped the dev broker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
