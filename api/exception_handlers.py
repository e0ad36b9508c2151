"""Domain errors as HTTP answers: what the client did wrong (422) or what is not there
yet or not reachable now (503, worth a retry)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from api.service import NoModel, UnknownCategory
from core.items import InvalidItem
from eventlog.producer import ProducerUnavailable
from featurestore.backend import StoreError

log = logging.getLogger(__name__)


async def no_model(_: Request, e: NoModel) -> JSONResponse:
    return JSONResponse({"detail": str(e)}, status_code=503)


async def store_error(_: Request, e: StoreError) -> JSONResponse:
    log.error("feature store error: %s", e)
    return JSONResponse({"detail": f"feature store unavailable: {e}"}, status_code=503)


async def unknown_category(_: Request, e: UnknownCategory) -> JSONResponse:
    return JSONResponse({"detail": str(e)}, status_code=422)


async def invalid_item(_: Request, e: InvalidItem) -> JSONResponse:
    """A catalogue write the contract refuses: the reason and its kind, as the dataflow
    would dead-letter it."""
    return JSONResponse({"detail": str(e), "kind": e.kind}, status_code=422)


async def producer_down(_: Request, e: ProducerUnavailable) -> JSONResponse:
    return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": "1"})


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
"""What ``FastAPI(exception_handlers=...)`` takes for each exception class."""

EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = {
    NoModel: no_model,
    StoreError: store_error,
    UnknownCategory: unknown_category,
    InvalidItem: invalid_item,
    ProducerUnavailable: producer_down,
}
