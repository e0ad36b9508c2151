"""What the routes work with, built once per run of the app by its lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from api.browse import Browser
from api.impressions import ImpressionLog
from api.service import Recommender
from core.catalog import CatalogProvider
from core.settings import Settings
from eventlog.health import KafkaWatch
from eventlog.producer import EventProducer
from featurestore.store import FeatureStore


class FlowHealth(Protocol):
    """A dataflow running beside the API, as ``/readyz`` reports it.

    Whoever starts the flow (the composition root, ``infra.serve``) hands it over."""

    def checks(self) -> dict[str, tuple[bool, str]]:
        """Check name -> (passes, what it found): ``dataflow`` (running and moving, or
        what it waits for or why it failed) and ``store`` (its writes succeed)."""
        ...


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
    kafka: KafkaWatch | None = None
    """Probes Kafka for ``/readyz`` and a fast 503 on ``POST /events``."""
