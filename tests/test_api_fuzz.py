"""Schemathesis over the OpenAPI schema, in-process against the ASGI app: whatever the
schema allows a client to send (and what it does not), the service never answers 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api.app import create_app
from featurestore import FeatureStore
from tests.helpers import isolated_settings, publish

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_schema(broker, tmp_path_factory):
    cfg = isolated_settings(
        tmp_path_factory.mktemp("fuzz") / "var",
        broker,
        admin_keys={"admin-key"},
        inprocess=False,
        access_log="off",
        variants={"control": {}, "fresh": {"weight_recent": 1.5}},
    )
    store = FeatureStore.open(cfg)
    publish(store, n=120, dim=8, n_profiles=10)
    store.close()
    app = create_app(cfg)
    with TestClient(app):  # runs the lifespan once: store, catalogue, producers
        yield schemathesis.openapi.from_asgi("/openapi.json", _without_lifespan(app))


def _without_lifespan(app):
    """Schemathesis opens a client (and so a lifespan) per call; the app is already up."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await app(scope, receive, send)

    return wrapped


def test_no_server_errors(api_schema):
    """Every operation in the schema, generated requests (positive and negative) as they
    come (keys too) and again with the admin key, so the protected paths run as well."""
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        if operation.path == "/admin/models/publish":
            continue  # rewrites the store; the admin tests cover it

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case):
            case.call_and_validate(checks=[not_a_server_error])
            case.call_and_validate(checks=[not_a_server_error], headers={"X-API-Key": "admin-key"})

        run()
