"""What the routes work with, built once per run of the app by its lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from api.browse import Browser
from api.impressions import ImpressionLog
from api.service import Recommender
from core.catalog import CatalogProvider
from core.settings import Settings
from eventlog.producer import EventProducer
from featurestore.store import FeatureStore


class Flag(Protocol):
    def is_set(self) -> bool: ...


class FlowHealth(Protocol):
    """A dataflow running beside the API, as ``/readyz`` reports it: ready while
    ``running`` is set; ``status`` says what it is doing (or why it failed).

    Whoever starts the flow (the composition root, ``infra.serve``) hands it over."""

    @property
    def status(self) -> str: ...

    @property
    def running(self) -> Flag: ...


@dataclass
class Resources:
    settings: Settings
    store: FeatureStore
    catalogs: CatalogProvider
    recommender: Recommender
    producer: EventProducer
    browser: Browser
    impressions: ImpressionLog | None = None
    flow: FlowHealth | None = None
    """The dataflow beside this process, if one runs in it; None: it runs elsewhere."""
