"""Request ids, per-route latency and request size limits (the log format: ``core.logs``).

A pure ASGI middleware rather than ``@app.middleware("http")``: Starlette's
``BaseHTTPMiddleware`` runs the endpoint in a separate task and streams the response
through a memory channel, which cost ~35 % of a trivial endpoint's throughput.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import CLIENT_REQUEST_ID, REQUEST_ID

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REQUEST_SECONDS = Histogram(
    "recsys_http_request_seconds",
    "HTTP request latency per route template",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
REQUESTS_TOO_LARGE = Counter("recsys_http_requests_too_large_total", "Bodies refused with 413")

access_log = logging.getLogger("api.access")


class _TooLarge(Exception):
    pass


def _client_id_and_length(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bytes | None]:
    """The client's X-Request-ID (if it is a plain id: letters, digits, ``._:-``, at most
    128; anything else is not kept) and the Content-Length header (raw), if any."""
    client = None
    length = None
    for k, v in headers:
        if k == b"x-request-id":
            client = v.decode("latin-1")
        elif k == b"content-length":
            length = v
    if client is not None and not _VALID_ID.match(client):
        client = None
    return client, length


class _Exchange:
    """One request's ASGI channels: the response gets the X-Request-ID header and its
    status noted; reading the body beyond ``max_body`` raises ``_TooLarge``."""

    __slots__ = ("_receive", "_send", "max_body", "received", "rid_header", "started", "status")

    def __init__(self, receive: Receive, send: Send, max_body: int, rid: str) -> None:
        self._receive = receive
        self._send = send
        self.max_body = max_body
        self.rid_header = (b"x-request-id", rid.encode())
        self.status = 500
        self.started = False
        self.received = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
            message["headers"] = [*message.get("headers", ()), self.rid_header]
        await self._send(message)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_body:
                raise _TooLarge
        return message


class RequestContext:
    """Gives every request an id of the server's own (in the X-Request-ID response header,
    the response body where it has one, the impression log and every log line), refuses
    bodies over ``max_body`` with 413, times the request per route template and writes
    one access-log line.

    A client's X-Request-ID is never the request's id (a client could make impressions
    collide or forge them): it is logged beside it as ``client_request_id``."""

    def __init__(
        self, app: ASGIApp, max_body: int, log_mode: str = "all", slow_ms: float = 100.0
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.log_all = log_mode == "all"
        self.log_some = log_mode == "errors_and_slow"
        self.slow_s = slow_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        client, length = _client_id_and_length(scope["headers"])
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)
        client_token = CLIENT_REQUEST_ID.set(client) if client is not None else None
        exchange = _Exchange(receive, send, self.max_body, rid)
        try:
            await self._serve(scope, exchange, length)
        finally:
            REQUEST_ID.reset(token)
            if client_token is not None:
                CLIENT_REQUEST_ID.reset(client_token)
            self._observe(scope, rid, client, exchange.status, time.perf_counter() - t0)

    async def _serve(self, scope: Scope, exchange: _Exchange, length: bytes | None) -> None:
        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                raise _TooLarge
            await self.app(scope, exchange.receive, exchange.send)
        except _TooLarge:
            REQUESTS_TOO_LARGE.inc()
            if exchange.started:
                raise
            await _send_json(
                exchange.send, 413, {"detail": f"request body larger than {self.max_body} bytes"}
            )

    def _observe(
        self, scope: Scope, rid: str, client: str | None, status: int, elapsed: float
    ) -> None:
        """The latency histogram, and the access-log line when the log mode wants it."""
        route = getattr(scope.get("route"), "path", "unmatched")
        REQUEST_SECONDS.labels(route, scope["method"], str(status)).observe(elapsed)
        if (
            self.log_all or (self.log_some and (status >= 400 or elapsed >= self.slow_s))
        ) and access_log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": rid,
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "ms": round(elapsed * 1000, 3),
            }
            if client is not None:
                fields["client_request_id"] = client
            access_log.info("request", extra={"fields": fields})


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(data)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
