"""Security that fails closed: once any key is configured every write needs a write (or
admin) key; open writes are warned about at start-up; the request id recorded with an
impression is the server's own, never the client's X-Request-ID."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from fastapi import HTTPException
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.app import create_app
from api.security import ApiKeys
from core.settings import ApiSettings
from featurestore import FeatureStore
from infra.broker import free_port
from tests.helpers import isolated_settings, publish

READ = {"X-API-Key": "r"}
WRITE = {"X-API-Key": "w"}
ADMIN = {"X-API-Key": "a"}


def outcome(keys: ApiKeys, scope: str, key: str | None) -> int:
    try:
        keys.check(scope, key)
    except HTTPException as e:
        return e.status_code
    return 200


@pytest.mark.parametrize(
    ("configured", "key", "write"),
    [
        ({}, None, 200),  # nothing configured: development, writes open
        ({"read_keys": {"r"}}, None, 403),  # read keys only: writes closed, not open
        ({"read_keys": {"r"}}, "r", 403),
        ({"read_keys": {"r"}}, "anything", 403),
        ({"admin_keys": {"a"}}, None, 401),
        ({"admin_keys": {"a"}}, "a", 200),
        ({"write_keys": {"w"}}, None, 401),
        ({"write_keys": {"w"}}, "nope", 401),
        ({"write_keys": {"w"}, "read_keys": {"r"}}, "r", 401),
        ({"write_keys": {"w"}, "read_keys": {"r"}}, "w", 200),
    ],
)
def test_writes_need_a_write_or_admin_key_once_any_key_is_configured(configured, key, write):
    keys = ApiKeys(ApiSettings(**configured))
    assert outcome(keys, "write", key) == write
    assert keys.writes_open == (not configured)


def app_settings(tmp_path: Path, **keys: set[str]):
    return isolated_settings(
        tmp_path / "var",
        bootstrap_servers=f"127.0.0.1:{free_port()}",  # no broker: the checks come first
        inprocess=False,
        impressions_enabled=False,
        **keys,
    )


def write_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every route of the app that changes something (any method but GET/HEAD)."""
    found = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, APIRoute):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            found += [(m, path) for m in sorted(route.methods - {"GET", "HEAD"})]
    return found


def test_with_only_read_keys_no_write_route_takes_a_request_without_a_write_key(tmp_path):
    settings = app_settings(tmp_path, read_keys={"r"})
    store = FeatureStore.open(settings)
    publish(store)
    try:
        with TestClient(create_app(settings, store=store)) as client:
            routes = write_routes(client)
            assert ("POST", "/events") in routes
            for method, path in routes:
                for headers in ({}, READ, {"X-API-Key": "made-up"}):
                    r = client.request(method, path, headers=headers, json={})
                    assert r.status_code in (401, 403), (method, path, headers, r.status_code)
            r = client.post("/events", json={"event_type": "view", "user_id": "u", "item_id": "i"})
            assert r.status_code == 403 and "RECSYS_API_WRITE_KEYS" in r.json()["detail"]
            assert client.get("/recommendations/u1", headers=READ).status_code == 200
    finally:
        store.close()


def test_a_write_key_passes_the_check(tmp_path):
    settings = app_settings(tmp_path, read_keys={"r"}, write_keys={"w"}, admin_keys={"a"})
    store = FeatureStore.open(settings)
    publish(store)
    try:
        with TestClient(create_app(settings, store=store)) as client:
            for headers in (WRITE, ADMIN):  # past the key check, to the body's validation
                assert client.post("/events", json={}, headers=headers).status_code == 422
            assert client.post("/events", json={}, headers=READ).status_code == 401
    finally:
        store.close()


@pytest.mark.parametrize("keyed", [False, True])
def test_the_start_up_log_warns_when_writes_are_open(tmp_path, caplog, keyed):
    settings = app_settings(tmp_path, **({"read_keys": {"r"}} if keyed else {}))
    store = FeatureStore.open(settings)
    publish(store)
    try:
        with caplog.at_level(logging.WARNING, logger="api.lifespan"):
            with TestClient(create_app(settings, store=store)):
                pass
    finally:
        store.close()
    warned = [r.getMessage() for r in caplog.records if "open to anyone" in r.getMessage()]
    assert bool(warned) is not keyed
    if warned:
        assert "RECSYS_API_WRITE_KEYS" in warned[0]


def test_the_request_id_is_the_servers_whatever_the_client_sends(tmp_path):
    settings = app_settings(tmp_path)
    store = FeatureStore.open(settings)
    publish(store)
    try:
        with TestClient(create_app(settings, store=store)) as client:
            ids = set()
            for _ in range(2):
                r = client.get("/recommendations/u1", headers={"X-Request-ID": "attacker-1"})
                rid = r.json()["request_id"]
                assert r.headers["x-request-id"] == rid and rid != "attacker-1"
                ids.add(rid)
            assert len(ids) == 2  # one id per response: impressions never collide
    finally:
        store.close()
