"""Start-up and shut-down of the API, for FastAPI's ``lifespan``.

``serving`` is the API's own part: from an open store, the producers, the recommender
and the model watcher, kept on ``app.state.resources`` while the app runs. ``standalone``
is a whole lifespan for the API alone (it opens the store itself and no dataflow runs
beside it); the composition root (``infra.serve.build_app``) composes its own from
``load_model`` and ``serving``, with the dataflow in between.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress

from fastapi import FastAPI

from api.browse import Browser
from api.impressions import ImpressionLog
from api.model_watch import check_once, watch
from api.resources import FlowHealth, Resources
from api.security import ApiKeys
from api.service import Recommender
from core.catalog import CatalogProvider
from core.settings import Settings
from eventlog.health import KafkaWatch
from eventlog.producer import EventProducer
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


async def load_model(settings: Settings, store: FeatureStore) -> CatalogProvider:
    """The store's catalogue provider with the live model loaded (on the embedded store,
    ``LATEST`` of the model directory published first). Without a model, start-up goes
    on: the model watcher picks one up once there is one."""
    catalogs = store.catalog_provider()
    try:
        await asyncio.to_thread(check_once, settings, store, catalogs)
    except Exception:
        log.exception("could not load a model at start-up; serving will wait for one")
    return catalogs


@asynccontextmanager
async def serving(
    app: FastAPI,
    settings: Settings,
    store: FeatureStore,
    catalogs: CatalogProvider,
    flow: FlowHealth | None = None,
    kafka: KafkaWatch | None = None,
) -> AsyncIterator[Resources]:
    """Serve from ``store`` (open; its owner closes it) until the block ends; ``flow``:
    the dataflow running beside the API in this process, for ``/readyz``; ``kafka``: a
    started watch of the cluster to share (its owner closes it; default: one of its own)."""
    own_watch = kafka is None
    kafka_watch = kafka or KafkaWatch(settings).start()
    producer = EventProducer(settings, kafka_watch)
    impressions = ImpressionLog(settings).start() if settings.api.impressions_enabled else None
    recommender = Recommender(settings, store, catalogs)
    resources = Resources(
        settings,
        store,
        catalogs,
        recommender,
        producer,
        Browser(recommender.catalog, store),
        impressions,
        flow,
        kafka_watch,
    )
    app.state.resources = resources
    watcher = asyncio.create_task(watch(settings, store, catalogs))
    log.info(
        "serving with %s store, dataflow %s",
        "embedded" if settings.embedded else f"server {settings.qdrant.url}",
        "in-process" if flow else "elsewhere",
    )
    _warn_if_open(app.state.api_keys)
    try:
        yield resources
    finally:
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher
        producer.close()
        if impressions is not None:
            await asyncio.to_thread(impressions.close)
        if own_watch:
            kafka_watch.close()


def _warn_if_open(keys: ApiKeys) -> None:
    if keys.writes_open:
        log.warning(
            "no API key is configured: POST /events and every other write is open to anyone; "
            "set RECSYS_API_WRITE_KEYS (and RECSYS_API_ADMIN_KEYS) to require keys"
        )


def standalone(settings: Settings, store: FeatureStore | None = None) -> Lifespan:
    """The API alone: ``store`` if given (its owner closes it), else the configured one,
    opened here and closed at the end. No dataflow runs in the process."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = store if store is not None else await asyncio.to_thread(FeatureStore.open, settings)
        try:
            catalogs = await load_model(settings, st)
            async with serving(app, settings, st, catalogs):
                yield
        finally:
            if store is None:
                st.close()
            log.info("stopped cleanly")

    return lifespan
