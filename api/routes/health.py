"""Liveness (GET /healthz) and readiness (GET /readyz) for orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import CatalogsDep, FlowDep
from api.responses import Health

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
def readyz(catalogs: CatalogsDep, flow: FlowDep) -> JSONResponse:
    """Ready to serve: a model is loaded and, when in-process, the dataflow runs."""
    catalog = catalogs.current
    checks = {"model": catalog.version if catalog else "none published"}
    ok = catalog is not None
    if flow is not None:
        checks["dataflow"] = flow.status
        ok = ok and flow.running.is_set()
    body = Health(status="ready" if ok else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
