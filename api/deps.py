"""What routes depend on, as ``Annotated`` aliases for FastAPI's dependency injection.

``create_app`` puts the settings and API keys on ``app.state``; the lifespan puts the
``Resources`` it built there. Each look-up reads ``app.state`` itself rather than
depending on ``ResourcesDep``: every level of dependency costs FastAPI work on every
request. They are ``async``: FastAPI runs a plain ``def`` dependency in its threadpool,
a hop a look-up does not need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security

from api.browse import Browser
from api.resources import Resources
from api.security import ApiKeys, api_key_header
from api.service import Recommender
from core.catalog import CatalogProvider
from core.settings import Settings
from eventlog.producer import EventProducer
from featurestore.store import FeatureStore


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_resources(request: Request) -> Resources:
    return request.app.state.resources  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_store(request: Request) -> FeatureStore:
    return request.app.state.resources.store  # type: ignore[no-any-return]


async def get_catalogs(request: Request) -> CatalogProvider:
    return request.app.state.resources.catalogs  # type: ignore[no-any-return]


async def get_recommender(request: Request) -> Recommender:
    return request.app.state.resources.recommender  # type: ignore[no-any-return]


async def get_browser(request: Request) -> Browser:
    return request.app.state.resources.browser  # type: ignore[no-any-return]


async def get_producer(request: Request) -> EventProducer:
    return request.app.state.resources.producer  # type: ignore[no-any-return]


StoreDep = Annotated[FeatureStore, Depends(get_store)]
CatalogsDep = Annotated[CatalogProvider, Depends(get_catalogs)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
BrowserDep = Annotated[Browser, Depends(get_browser)]
ProducerDep = Annotated[EventProducer, Depends(get_producer)]


# A plain ``def``, so FastAPI runs it in its threadpool: a hop on every keyed request,
# which the `just bench-api` figures include.
def _key_check(scope: str) -> Callable[[Request, str | None], None]:
    def check(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
        keys: ApiKeys = request.app.state.api_keys
        keys.check(scope, key)

    return check


# For a router's or a route's ``dependencies=[...]``: the X-API-Key each scope needs.
require_read = Depends(_key_check("read"))
require_write = Depends(_key_check("write"))
require_admin = Depends(_key_check("admin"))
