"""Request ids, JSON log lines and the body limit, on a bare app (no store, no broker)."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.observability import RequestContext
from core.logs import JsonFormatter


def _app(mode: str = "all") -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestContext, max_body=100, log_mode=mode, slow_ms=1000)

    @app.post("/echo/{x}")
    async def echo(request: Request, x: str) -> dict:
        return {"rid": request.state.request_id, "n": len(await request.body())}

    return app


def _access(caplog) -> list[logging.LogRecord]:
    """The access log's records (other loggers, e.g. the test client's, may log too)."""
    return [r for r in caplog.records if r.name == "api.access"]


def test_access_log_is_json_with_the_server_and_the_client_request_id(caplog):
    c = TestClient(_app())
    with caplog.at_level(logging.INFO, logger="api.access"):
        r = c.post("/echo/1", content=b"x" * 10, headers={"X-Request-ID": "abc-1"})
    rid = r.json()["rid"]
    assert r.json()["n"] == 10 and r.headers["x-request-id"] == rid != "abc-1"
    line = json.loads(JsonFormatter().format(_access(caplog)[-1]))
    assert line["request_id"] == rid and line["client_request_id"] == "abc-1"
    assert line["route"] == "/echo/{x}"
    assert line["status"] == 200 and line["path"] == "/echo/1" and line["ms"] > 0
    with caplog.at_level(logging.INFO, logger="api.access"):
        c.post("/echo/1", headers={"X-Request-ID": "not an id\n"})
    assert "client_request_id" not in _access(caplog)[-1].fields


def test_errors_and_slow_mode_logs_only_errors(caplog):
    c = TestClient(_app("errors_and_slow"))
    with caplog.at_level(logging.INFO, logger="api.access"):
        c.post("/echo/1")
        c.get("/nowhere")
    assert [r.fields["status"] for r in _access(caplog)] == [404]


def test_bodies_over_the_limit_get_413_declared_or_streamed():
    c = TestClient(_app("off"))
    assert c.post("/echo/1", content=b"x" * 100).status_code == 200
    r = c.post("/echo/1", content=b"x" * 101)
    assert r.status_code == 413 and "100 bytes" in r.json()["detail"]
    assert r.headers["x-request-id"]
    streamed = c.post("/echo/1", content=iter([b"x" * 60, b"x" * 60]))
    assert streamed.status_code == 413
