"""GET /metrics: the process's Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus metrics (API and, when in-process, dataflow)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
