"""Model versions (needs an admin key): list, publish, activate or roll back, reload."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from pydantic import BaseModel, Field

from api.deps import CatalogsDep, SettingsDep, StoreDep, require_admin
from api.model_watch import check_once
from api.model_watch import refresh as refresh_catalog
from api.params import VERSION_PATTERN, Version
from core.artifacts import latest_version
from core.catalog import CatalogProvider
from featurestore.backend import StoreError
from featurestore.publish import publish_model_dir
from featurestore.store import FeatureStore

router = APIRouter(tags=["admin"], dependencies=[require_admin])

# FeatureStore.models_overview(): the published versions, the active one, the one served.
Overview = dict[str, Any]


class PublishRequest(BaseModel):
    version: str | None = Field(
        None,
        pattern=VERSION_PATTERN,
        description="A trained version under the model directory; default: LATEST",
    )
    activate: bool = Field(True, description="Make it live once written")


def _models(store: FeatureStore, catalogs: CatalogProvider) -> Overview:
    serving = catalogs.current
    return store.models_overview(serving.version if serving else None)


@router.get("/admin/models")
def admin_models(store: StoreDep, catalogs: CatalogsDep) -> Overview:
    """Published versions, the active one, and the one this process serves."""
    return _models(store, catalogs)


@router.post("/admin/models/publish")
def admin_publish(
    settings: SettingsDep,
    store: StoreDep,
    catalogs: CatalogsDep,
    body: Annotated[PublishRequest | None, Body()] = None,
) -> Overview:
    """Write a trained version (default: LATEST in the model directory) to the store
    beside the live one and, unless activate=false, switch serving to it. Requests in
    flight finish on the version they started with."""
    body = body or PublishRequest()
    assert settings.model_dir is not None
    version = body.version or latest_version(settings.model_dir)
    if version is None or not (settings.model_dir / version).is_dir():
        raise HTTPException(404, f"no trained model {version!r} under {settings.model_dir}")
    try:
        publish_model_dir(store, settings.model_dir / version, activate=body.activate)
    except StoreError as e:
        raise HTTPException(409, str(e)) from None
    refresh_catalog(catalogs)
    return _models(store, catalogs)


@router.post("/admin/models/{version}/activate")
def admin_activate(version: Version, store: StoreDep, catalogs: CatalogsDep) -> Overview:
    """Make a published version live (a rollback is activating an older one)."""
    if store.model(version) is None:
        raise HTTPException(404, f"model {version!r} is not published")
    store.activate(version)
    refresh_catalog(catalogs)
    return _models(store, catalogs)


@router.post("/admin/reload")
def admin_reload(settings: SettingsDep, store: StoreDep, catalogs: CatalogsDep) -> Overview:
    """Check for a new model now instead of at the next poll."""
    check_once(settings, store, catalogs)
    return _models(store, catalogs)
