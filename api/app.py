"""The REST service: ``create_app`` puts the routers, middleware and error handlers
together. The API alone:

    uvicorn --factory api.app:create_app

serves from the configured store with no dataflow beside it (a Qdrant server, the
dataflow in its own processes). ``infra.serve.build_app`` is the whole product in one
process: the same app, with the dataflow in a background thread on the embedded store.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from api.exception_handlers import EXCEPTION_HANDLERS
from api.lifespan import Lifespan, standalone
from api.observability import RequestContext
from api.routes import (
    admin,
    catalog,
    demo,
    events,
    health,
    items,
    metrics,
    recommendations,
    users,
)
from api.security import ApiKeys
from core.events import EVENT_JSON_SCHEMA
from core.settings import Settings, get_settings
from featurestore.store import FeatureStore


def create_app(
    settings: Settings | None = None,
    store: FeatureStore | None = None,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    """The app; ``lifespan`` runs it (default: ``api.lifespan.standalone(settings, store)``,
    the API alone on ``store`` or, without one, the configured store)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Real-time recommendations",
        version="0.1.0",
        description="Recommendations that react to a user's last events within a second.",
        lifespan=lifespan or standalone(settings, store),
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.settings = settings
    app.state.api_keys = ApiKeys(settings.api)
    app.add_middleware(
        RequestContext,
        max_body=settings.api.max_request_bytes,
        log_mode=settings.api.access_log,
        slow_ms=settings.api.access_log_slow_ms,
    )
    _add_routes(app, recommendations.build_router(settings))
    _add_routes(app, items.similar_router(settings))
    for module in (users, items, catalog, events, health, metrics, admin):
        _add_routes(app, module.router)
    app.mount(demo.ASSETS_PATH, demo.assets(), name="demo-assets")
    _add_routes(app, demo.router)
    _add_schemas(app)
    return app


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """The router's routes, as routes of the app itself. ``app.include_router`` keeps an
    included router nested and matches through it on every request (~45 Python calls for
    each router passed over); these routers have no prefix nor include-time options to
    apply, their own tags and dependencies are on their routes already."""
    app.router.routes.extend(router.routes)


def _add_schemas(app: FastAPI) -> None:
    """Put the msgspec schemas of the event and catalogue-write contracts (the ones the
    dataflow validates with) into OpenAPI."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        defs = EVENT_JSON_SCHEMA.get("$defs", {})
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs)
        components.update(catalog.SCHEMAS)
        return schema

    # FastAPI documents replacing ``app.openapi`` to extend the schema, yet types it as a
    # method, which mypy does not let an assignment replace.
    app.openapi = openapi  # type: ignore[method-assign]
