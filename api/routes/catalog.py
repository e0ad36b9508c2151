"""Catalogue writes: POST /items (one item or a list), PATCH /items/{id}, DELETE /items/{id}.

Each write is checked with the items-topic contract (``core.items``), the one the
dataflow applies, and produced to the items topic keyed by item id; 202 once Kafka
acknowledged it. The dataflow then folds it into the live catalogue (and the store), so
the API never writes the catalogue itself: a 202 means "on its way", and the item shows
in recommendations once the flow has embedded it. A write the contract refuses is a 422
with the same reason (``detail``) and ``kind`` the dataflow would dead-letter it with.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import msgspec
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter

from api.deps import ProducerDep, RecommenderDep, require_write
from api.params import ItemId
from api.responses import ItemsAccepted
from api.service import Recommender
from core import items
from core.items import Delete, InvalidItem, ItemWrite

ITEM_WRITES = Counter(
    "recsys_api_item_writes_total", "Catalogue writes accepted by the API", ["op"]
)
ITEM_WRITES_REJECTED = Counter(
    "recsys_api_item_writes_rejected_total", "Catalogue write requests refused (422)", ["kind"]
)


def _schemas() -> dict[str, Any]:
    """The request bodies' OpenAPI schemas, from the contract's own msgspec schema:
    ``ItemUpsert`` (``op`` may be left out) and ``ItemPatch`` (no ``op``, no ``item_id``:
    the path names the item)."""
    _, defs = msgspec.json.schema_components([items.Upsert, items.Patch])
    upsert = copy.deepcopy(defs["Upsert"])
    upsert["required"] = [f for f in upsert["required"] if f != "op"]
    patch = copy.deepcopy(defs["Patch"])
    for name in ("op", "item_id"):
        patch["properties"].pop(name)
    patch["required"] = []
    patch["description"] = "The fields to change; those left out (or null) stay as they are."
    return {
        "ItemUpsert": upsert | {"title": "ItemUpsert"},
        "ItemPatch": patch | {"title": "ItemPatch"},
    }


SCHEMAS = _schemas()
"""Added to the app's OpenAPI components (``api.app``)."""


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_UPSERT_REF = {"$ref": "#/components/schemas/ItemUpsert"}
# The bodies are read raw and decoded by the contract, so their schema is stated here.
_POST_BODY = _body(
    {"oneOf": [_UPSERT_REF, {"type": "array", "items": _UPSERT_REF, "maxItems": items.MAX_BATCH}]}
)
_PATCH_BODY = _body({"$ref": "#/components/schemas/ItemPatch"})

router = APIRouter(tags=["catalogue"], dependencies=[require_write])


@router.post("/items", status_code=202, response_model=ItemsAccepted, openapi_extra=_POST_BODY)
async def post_items(request: Request, producer: ProducerDep) -> ItemsAccepted:
    """Add items, or replace them whole: one item or a JSON list of up to 1,000.

    All-or-nothing: an invalid item refuses the request (422 with the reason and its
    ``kind``) and nothing is produced. 202 once Kafka acknowledged every write; the
    dataflow then embeds each item with the live model's item tower and serves it."""
    body = await request.body()  # RequestContext refuses bodies over max_request_bytes
    try:
        writes = items.decode_upserts(body)
    except InvalidItem as e:
        raise _refused(e) from None
    if not writes:
        raise _refused(InvalidItem("no items in the request", "invalid_field"))
    return await _produce(producer, writes)


@router.patch(
    "/items/{item_id}", status_code=202, response_model=ItemsAccepted, openapi_extra=_PATCH_BODY
)
async def patch_item(
    item_id: ItemId, request: Request, producer: ProducerDep, recommender: RecommenderDep
) -> ItemsAccepted:
    """Change some fields of an item (the body: the fields to change, e.g.
    ``{"available": false}``); the others stay. 404 for an item the live catalogue lacks."""
    body = await request.body()
    try:
        write = _patch(item_id, body)
    except InvalidItem as e:
        raise _refused(e) from None
    _known(recommender, item_id)
    return await _produce(producer, [write])


@router.delete("/items/{item_id}", status_code=202, response_model=ItemsAccepted)
async def delete_item(
    item_id: ItemId, producer: ProducerDep, recommender: RecommenderDep
) -> ItemsAccepted:
    """Take an item out of recommendations: it becomes unavailable at once once the
    dataflow folds the write. Its row stays (users' histories point at it); an upsert
    or ``PATCH {"available": true}`` brings it back. 404 for an unknown item."""
    try:
        write = items.check(Delete(item_id=item_id))
    except InvalidItem as e:
        raise _refused(e) from None
    _known(recommender, item_id)
    return await _produce(producer, [write])


def _patch(item_id: str, body: bytes) -> ItemWrite:
    """The patch the body describes, checked by the contract (``core.items.decode``)."""
    try:
        fields = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return items.decode(body)  # raises InvalidItem with the contract's reason
    if not isinstance(fields, dict):
        raise InvalidItem("the body is a JSON object of the fields to change", "invalid_field")
    for name in ("op", "item_id"):
        if name in fields:
            raise InvalidItem(
                f"invalid item: unknown field `{name}` (the path names the item)", "unknown_field"
            )
    if not fields:
        raise InvalidItem("nothing to change: give at least one field", "invalid_field")
    return items.decode(msgspec.json.encode({"op": "patch", "item_id": item_id, **fields}))


def _known(recommender: Recommender, item_id: str) -> None:
    catalog = recommender.catalog()
    if item_id not in catalog.index:
        raise HTTPException(
            404,
            f"item {item_id!r} is not in the live catalogue (model {catalog.version}); "
            "an item added moments ago may still be on its way: retry in a second",
        )


def _refused(e: InvalidItem) -> InvalidItem:
    ITEM_WRITES_REJECTED.labels(e.kind).inc()
    return e


async def _produce(producer: ProducerDep, writes: Sequence[ItemWrite]) -> ItemsAccepted:
    await run_in_threadpool(producer.send_items, writes)  # Kafka away: 503
    for w in writes:
        ITEM_WRITES.labels(type(w).__name__.lower()).inc()
    return ItemsAccepted(accepted=len(writes), item_ids=[w.item_id for w in writes])
