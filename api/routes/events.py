"""POST /events: validate events against the contract and produce them to Kafka."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter

from api.deps import ProducerDep, SettingsDep, require_write
from api.responses import EventsAccepted
from core.events import Event, InvalidEvent, ValidEvent, decode_many, validate
from core.settings import Settings

MAX_EVENTS_PER_REQUEST = 1000

EVENTS_ACCEPTED = Counter("recsys_api_events_accepted_total", "Events accepted by POST /events")
EVENTS_REJECTED = Counter("recsys_api_events_rejected_total", "Events rejected by POST /events")

# The body is read raw (one event or a list, decoded by the contract's msgspec decoder),
# so the schema is stated here: the Event definitions come from the contract.
_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    ]
                }
            }
        },
    }
}

router = APIRouter(tags=["events"], dependencies=[require_write])


@router.post("/events", status_code=202, response_model=EventsAccepted, openapi_extra=_BODY_SCHEMA)
async def post_events(
    request: Request, settings: SettingsDep, producer: ProducerDep
) -> EventsAccepted:
    """Accept one event or a JSON list of events and produce them to Kafka.

    All-or-nothing: if any event is invalid, none is produced and the 422 lists
    every problem with its index. A missing timestamp means "now"."""
    body = await request.body()  # RequestContext refuses bodies over max_request_bytes
    valid = _validated(_decoded(body), settings)
    await run_in_threadpool(producer.send, valid)
    EVENTS_ACCEPTED.inc(len(valid))
    return EventsAccepted(accepted=len(valid))


def _decoded(body: bytes) -> list[Event]:
    try:
        events = decode_many(body)
    except InvalidEvent as e:
        EVENTS_REJECTED.inc()
        raise HTTPException(422, [{"index": None, "error": str(e)}]) from None
    if not events:
        raise HTTPException(422, [{"index": None, "error": "no events in the request"}])
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise HTTPException(413, f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    return events


def _validated(events: list[Event], settings: Settings) -> list[ValidEvent]:
    """Every event checked against the contract; 422 listing each invalid one."""
    now = time.time()
    types = settings.fold.event_weights.keys()
    future, oldest = settings.fold.max_future_seconds, settings.fold.min_timestamp.timestamp()
    valid, errors = [], []
    for i, e in enumerate(events):
        try:
            valid.append(validate(e, types, now, future, fallback_ts=now, min_ts=oldest))
        except InvalidEvent as err:
            errors.append({"index": i, "error": str(err)})
    if errors:
        EVENTS_REJECTED.inc(len(errors))
        raise HTTPException(422, errors)
    return valid
