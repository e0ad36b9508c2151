"""The Bytewax dataflow, wired.

    events topic -> parse/validate --(rejected)--> dead-letter topic (original bytes + reason)
                        |
                        +-- key by user --> fold (decayed vector, session) --> user_state
                        +-- key by item --> decayed counts (trending)       --> item_trends

Run it alone against a Qdrant server (the production topology), with recovery on:

    RECSYS_QDRANT_URL=http://qdrant:6333 python -m dataflow.run

Scale with Bytewax's own flags (``-w 2`` workers, or ``-i/-a`` for a process cluster);
Kafka partitions are the unit of input parallelism and users are keyed to partitions.
(``python -m bytewax.run "dataflow.flow:get_flow()"`` works too, but recovery is then
only on if you pass ``-r/-s/-b`` yourself.)
"""

from __future__ import annotations

import atexit
import gc
import logging
import threading
import time

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow

from core.catalog import CatalogProvider
from core.settings import Settings, get_settings
from dataflow import metrics
from dataflow.deadletter import Rejected, dead_letter_sink
from dataflow.sinks import TrendSink, UserStateSink
from dataflow.source import StoppableKafkaSource
from dataflow.steps import Accepted, ExpiringState, Parser, TrendFolder, UserFolder
from eventlog.admin import events_log_id
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)


def build_flow(
    settings: Settings,
    store: FeatureStore,
    catalogs: CatalogProvider,
    stop: threading.Event | None = None,
) -> Dataflow:
    flow = Dataflow("recsys")
    messages = op.input("events", flow, StoppableKafkaSource(settings, stop))
    parsed = op.flat_map_batch("parse", messages, Parser(settings).parse_batch)
    accepted = op.branch("accepted", parsed, lambda x: isinstance(x, Accepted))

    rejected = op.map("count_rejected", accepted.falses, _count_rejected)
    op.output("dead_letter", rejected, dead_letter_sink(settings))

    # Offsets remembered in stored states count only within this incarnation of the topic.
    log_id = events_log_id(settings)
    ttl = settings.dataflow.state_ttl_seconds
    users = UserFolder(settings, store, catalogs, log_id)
    by_user = op.key_on("by_user", accepted.trues, _user_key)
    states = op.stateful_batch("fold_user", by_user, ExpiringState.builder(users, ttl))
    op.output("user_state", states, UserStateSink(store))

    by_item = op.key_on("by_item", accepted.trues, _item_key)
    items = TrendFolder(settings, store, log_id)
    every = settings.dataflow.trend_emit_seconds
    trends = op.stateful_batch("count_item", by_item, ExpiringState.builder(items, ttl, every))
    op.output("item_trends", trends, TrendSink(store))
    return flow


def _user_key(a: Accepted) -> str:
    return a.event.user_id


def _item_key(a: Accepted) -> str:
    return a.event.item_id


def _count_rejected(r: Rejected) -> KafkaSinkMessage[bytes | None, bytes | None]:
    metrics.EVENTS_DEAD_LETTERED.labels(r.kind).inc()
    log.warning("dead-lettered %s:%s:%s: %s", r.topic, r.partition, r.offset, r.reason)
    return r.to_sink()


def tune_gc() -> None:
    """Make Python's cyclic GC cheap for a long-running flow.

    The flow allocates several short-lived objects per event; with the default threshold
    (700) the collector runs every few hundred events and, holding tens of thousands of
    user states, spent ~20 % of the flow's time (py-spy). Nothing on the hot path makes
    reference cycles, so collecting less often frees the same memory. Objects alive at
    start (modules, the catalogue) are frozen out of every collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def wait_for_model(catalogs: CatalogProvider, stop: threading.Event | None = None) -> bool:
    """Block until a model is published: user vectors need an item space to live in.

    Events keep accumulating in Kafka meanwhile; nothing is lost.
    """
    warned = 0.0
    while catalogs.refresh() is None:
        if stop is not None and stop.is_set():
            return False
        if time.monotonic() - warned > 30:
            log.warning("no published model yet; waiting (train one with `just train`)")
            warned = time.monotonic()
        time.sleep(0.5)
    return True


def get_flow(stop: threading.Event | None = None) -> Dataflow:
    """Factory for ``python -m dataflow.run`` (and ``bytewax.run "dataflow.flow:get_flow()"``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    store = FeatureStore.open(settings)
    atexit.register(store.close)
    catalogs = store.catalog_provider()
    wait_for_model(catalogs, stop)
    return build_flow(settings, store, catalogs, stop)
