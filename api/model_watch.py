"""Picks up newly trained models without a restart.

With a Qdrant server, training publishes and activates the version itself; serving
only notices the new active version. With the embedded store, the serving process
holds the store, so training leaves the model in the model directory (``LATEST``)
and this watcher publishes and activates it here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from core.artifacts import latest_version
from core.catalog import CatalogProvider
from core.settings import Settings
from featurestore.publish import publish_model_dir
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)


def publish_latest_if_new(settings: Settings, store: FeatureStore) -> str | None:
    """Publish and activate ``<model_dir>/LATEST`` unless the store already has it."""
    assert settings.model_dir is not None
    version = latest_version(settings.model_dir)
    if version is None or store.model(version) is not None:
        return None
    publish_model_dir(store, settings.model_dir / version, activate=True)
    return version


def refresh(catalogs: CatalogProvider) -> None:
    """Follow the active version; after loading a new catalogue, move everything alive
    out of the garbage collector's sight (``gc.freeze``): a 100k-item catalogue is
    ~10^6 long-lived objects that every full collection would otherwise walk, which
    showed up as 50-100 ms pauses in the load test's tail. Frozen objects without
    cycles are still freed by reference counting when an old catalogue is dropped."""
    before = catalogs.current
    current = catalogs.refresh()
    if current is not None and (before is None or current.version != before.version):
        gc.collect()
        gc.freeze()


def check_once(settings: Settings, store: FeatureStore, catalogs: CatalogProvider) -> None:
    if settings.embedded and settings.api.auto_publish_latest:
        published = publish_latest_if_new(settings, store)
        if published:
            log.info("published model %s from %s", published, settings.model_dir)
    refresh(catalogs)


async def watch(settings: Settings, store: FeatureStore, catalogs: CatalogProvider) -> None:
    """Look for a new model every ``model_poll_seconds`` and for catalogue writes (rows
    the dataflow wrote into the live version) every ``catalog_refresh_seconds``."""
    next_model_check = 0.0
    while True:
        try:
            if time.monotonic() >= next_model_check:
                next_model_check = time.monotonic() + settings.api.model_poll_seconds
                await asyncio.to_thread(check_once, settings, store, catalogs)
            else:
                await asyncio.to_thread(refresh, catalogs)
        except Exception:  # keep serving the current model; say why loudly
            log.exception("model check failed; still serving the current model")
        await asyncio.sleep(settings.catalog.catalog_refresh_seconds)
