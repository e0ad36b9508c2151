"""Liveness (GET /healthz) and readiness (GET /readyz) for orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ResourcesDep
from api.resources import Resources
from api.responses import Health
from featurestore.store import FeatureStore

router = APIRouter(tags=["ops"])

Check = tuple[bool, str]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (liveness: nothing else is checked)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Not ready: `failed` names the checks"}},
)
def readyz(resources: ResourcesDep) -> JSONResponse:
    """Ready to serve: a model is loaded, Kafka answers, the store reads and, when the
    dataflow runs in this process, it runs, moves and its store writes succeed.
    ``checks`` says what each check found, ``failed`` which ones fail."""
    checks = readiness(resources)
    failed = [name for name, (ok, _) in checks.items() if not ok]
    body = Health(
        status="not ready" if failed else "ready",
        checks={name: found for name, (_, found) in checks.items()},
        failed=failed,
    )
    return JSONResponse(body.model_dump(), status_code=503 if failed else 200)


def readiness(resources: Resources) -> dict[str, Check]:
    """Check name -> (passes, what it found)."""
    catalog = resources.catalogs.current
    checks = {"model": (catalog is not None, catalog.version if catalog else "none published")}
    if resources.kafka is not None:
        ok, found = resources.kafka.check()
        checks["kafka"] = (ok or not resources.settings.api.ready_requires_kafka, found)
    checks["store"] = _store_reads(resources.store)
    if resources.flow is not None:
        for name, check in resources.flow.checks().items():
            if name not in checks or checks[name][0]:
                checks[name] = check
    return checks


def _store_reads(store: FeatureStore) -> Check:
    try:
        store.active_version()
    except Exception as e:
        return False, f"cannot read the feature store: {e}"
    return True, "ok"
