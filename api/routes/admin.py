"""Model versions: the read-only listing (GET /models, a read key or none when no read key
is configured) and the admin endpoints (an admin key): publish, activate or roll back,
reload."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from pydantic import BaseModel, Field

from api.deps import CatalogsDep, SettingsDep, StoreDep, require_admin, require_read
from api.model_watch import check_once
from api.model_watch import refresh as refresh_catalog
from api.params import VERSION_PATTERN, Version
from core.artifacts import latest_version
from core.catalog import CatalogProvider
from featurestore.backend import StoreError
from featurestore.publish import publish_model_dir
from featurestore.store import FeatureStore

router = APIRouter(tags=["models"])


class HeldOut(BaseModel):
    """The held-out check of training (the latest events of the data, not trained on);
    null where the run had none."""

    recall_at_10: float | None = None
    ndcg_at_10: float | None = None
    users_evaluated: int | None = None
    popularity_recall_at_10: float | None = Field(
        None, description="The same check for the most popular items (the baseline)"
    )
    popularity_ndcg_at_10: float | None = None
    session_hr_at_10: float | None = Field(
        None, description="The session model's next-item hit rate at 10"
    )


class ModelVersion(BaseModel):
    version: str
    created_at: str = Field(description="When it was trained (RFC 3339)")
    items: int
    profiles: int = Field(description="Users with a long-term profile")
    active: bool
    held_out: HeldOut
    metrics: dict[str, Any] = Field(description="Everything its training recorded")


class Overview(BaseModel):
    """The published versions (oldest first), the active one and the one this process
    serves (it follows the active one within seconds)."""

    active: str | None
    serving: str | None
    models: list[ModelVersion]


class PublishRequest(BaseModel):
    version: str | None = Field(
        None,
        pattern=VERSION_PATTERN,
        description="A trained version under the model directory; default: LATEST",
    )
    activate: bool = Field(True, description="Make it live once written")


def _models(store: FeatureStore, catalogs: CatalogProvider) -> Overview:
    serving = catalogs.current
    return overview_of(store.models_overview(serving.version if serving else None))


def overview_of(raw: dict[str, Any]) -> Overview:
    """``FeatureStore.models_overview()`` as the response (also `recsys models --store`)."""
    return Overview(
        active=raw["active"],
        serving=raw["serving"],
        models=[_version(m, raw["active"]) for m in raw["models"]],
    )


def _version(m: dict[str, Any], active: str | None) -> ModelVersion:
    metrics = m.get("metrics") or {}
    popularity = metrics.get("popularity") or {}
    return ModelVersion(
        version=m["version"],
        created_at=m["created_at"],
        items=m.get("items", 0),
        profiles=m.get("profiles", 0),
        active=m["version"] == active,
        held_out=HeldOut(
            recall_at_10=metrics.get("recall_at_10"),
            ndcg_at_10=metrics.get("ndcg_at_10"),
            users_evaluated=metrics.get("users_evaluated"),
            popularity_recall_at_10=popularity.get("recall_at_10"),
            popularity_ndcg_at_10=popularity.get("ndcg_at_10"),
            session_hr_at_10=metrics.get("session_hr_at_10"),
        ),
        metrics=metrics,
    )


@router.get("/models", dependencies=[require_read])
def models(store: StoreDep, catalogs: CatalogsDep) -> Overview:
    """The published versions with their training date and held-out metrics, the active
    one and the one served: read-only, so a read key (or none, when no read key is
    configured) is enough."""
    return _models(store, catalogs)


@router.get("/admin/models", dependencies=[require_admin], tags=["admin"])
def admin_models(store: StoreDep, catalogs: CatalogsDep) -> Overview:
    """The same as GET /models, behind the admin key."""
    return _models(store, catalogs)


@router.post("/admin/models/publish", dependencies=[require_admin], tags=["admin"])
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


@router.post("/admin/models/{version}/activate", dependencies=[require_admin], tags=["admin"])
def admin_activate(version: Version, store: StoreDep, catalogs: CatalogsDep) -> Overview:
    """Make a published version live (a rollback is activating an older one)."""
    if store.model(version) is None:
        raise HTTPException(404, f"model {version!r} is not published")
    store.activate(version)
    refresh_catalog(catalogs)
    return _models(store, catalogs)


@router.post("/admin/reload", dependencies=[require_admin], tags=["admin"])
def admin_reload(settings: SettingsDep, store: StoreDep, catalogs: CatalogsDep) -> Overview:
    """Check for a new model now instead of at the next poll."""
    check_once(settings, store, catalogs)
    return _models(store, catalogs)
