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
    settings: Settings = request.app.state.settings
    return settings


async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


SettingsDep = Annotated[Settings, Depends(get_settings)]
ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_store(request: Request) -> FeatureStore:
    store: FeatureStore = request.app.state.resources.store
    return store


async def get_catalogs(request: Request) -> CatalogProvider:
    catalogs: CatalogProvider = request.app.state.resources.catalogs
    return catalogs


async def get_recommender(request: Request) -> Recommender:
    recommender: Recommender = request.app.state.resources.recommender
    return recommender


async def get_browser(request: Request) -> Browser:
    browser: Browser = request.app.state.resources.browser
    return browser


async def get_producer(request: Request) -> EventProducer:
    producer: EventProducer = request.app.state.resources.producer
    return producer


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
