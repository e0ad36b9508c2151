"""The Bytewax dataflow, wired.

    events topic -> parse/validate --(rejected)--> dead-letter topic (original bytes + reason)
                        |
                        +-- shard by user --> fold (decayed vector, session) --> user_state
                        |   (events and erasure markers)                         (or erasure)
                        +-- shard by item --> decayed counts (trending)       --> item_trends
                            (with fold.trending_enabled)

    items topic  -> parse (core.items) --(rejected)--> dead-letter topic
                        +-- one key --> merge, embed, write (dataflow.catalog) --> catalog_items,
                                                                    the live model's rows

``build_flow`` wires the steps between a source and three sinks it is given;
``kafka_flow`` gives it the production edges (the events topic, the dead-letter topic,
the feature store). Run it alone against a Qdrant server (the production topology), with
recovery on:

    RECSYS_QDRANT_URL=http://qdrant:6333 python -m dataflow.run

Scale with Bytewax's own flags (``-w 2`` workers, or ``-i/-a`` for a process cluster);
Kafka partitions are the unit of input parallelism and users are keyed to partitions.
The stateful steps hold their keys in ``dataflow.state_shards`` shards (``dataflow.shards``):
the store is the state of record, Bytewax's recovery holds the source offsets and the few
states not written yet, so an epoch costs the same with 1,000 users held or 1,000,000.
(``python -m bytewax.run "dataflow.flow:get_flow()"`` works too, but recovery is then
only on if you pass ``-r/-s/-b`` yourself.)
"""

from __future__ import annotations

import atexit
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, TypeVar, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink
from confluent_kafka import Message

from core.catalog import CatalogProvider
from core.logs import configure_logging
from core.settings import Settings, get_settings
from core.state import Trend, UserState
from dataflow.catalog import (
    CatalogWriter,
    ItemMessage,
    catalog_builder,
    catalog_key,
    parse_items,
    text_encoder,
)
from dataflow.deadletter import DeadLetter, Rejected, dead_letter, dead_letter_sink
from dataflow.incarnation import Incarnation
from dataflow.parsing import Accepted, Erasure, Parser
from dataflow.shards import ShardState, shard_keys
from dataflow.sinks import StoreWrites, TrendSink, UserStateSink
from dataflow.source import SourceProgress, StoppableKafkaSource
from dataflow.trends import StoredTrends, TrendFolder
from dataflow.users import StoredUsers, UserErased, UserFolder
from eventlog.admin import events_log_id
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

T = TypeVar("T")

Parsed = Accepted | Erasure
"""What the stateful steps fold: an event, or a user's erasure marker."""


@dataclass(frozen=True, slots=True)
class Sinks:
    """Where the flow's three outputs go."""

    dead_letter: Sink[DeadLetter]
    user_state: Sink[tuple[str, UserState | UserErased]]
    """Each user's latest state, once per micro-batch that changed it, and each user's
    erasure (``UserErased``), in order with them."""
    item_trends: Sink[tuple[str, Trend]]
    """Each item's decayed count, at most once per ``trend_emit_seconds`` (none with
    ``fold.trending_enabled`` off)."""


class StoredState(StoredUsers, StoredTrends, Protocol):
    """Where the folds read back a key the flow does not hold (the feature store)."""


@dataclass(frozen=True, slots=True)
class Folders:
    """The logic of the two stateful steps."""

    users: UserFolder
    items: TrendFolder

    @classmethod
    def create(
        cls,
        settings: Settings,
        store: StoredState,
        catalogs: CatalogProvider,
        log_id: str | None = None,
    ) -> Folders:
        """``log_id``: the events topic incarnation read (``eventlog.admin.events_log_id``);
        offsets remembered in stored states count only within it. None: not checked."""
        incarnation = Incarnation(log_id)
        return cls(
            UserFolder(settings, store, catalogs, incarnation),
            TrendFolder(settings, store, catalogs, incarnation),
        )


@dataclass(frozen=True, slots=True)
class CatalogInput:
    """Catalogue writes: where they come from and what applies them."""

    source: Source[Message]
    writer: CatalogWriter


def build_flow(
    settings: Settings,
    source: Source[Message],
    sinks: Sinks,
    folders: Folders,
    catalog: CatalogInput | None = None,
) -> Dataflow:
    """The dataflow from ``source`` (Kafka messages) to ``sinks``, and from ``catalog``'s
    source (catalogue writes) to the store. Every message ends in a fold, a write or the
    dead-letter sink: rejected by the parser, or one whose fold raised (``ShardState``
    emits it as a ``Rejected``)."""
    flow = Dataflow("recsys")
    messages = op.input("events", flow, source)
    parsed = op.flat_map_batch("parse", messages, _Split(Parser(settings).parse_batch))
    # each micro-batch's events and users' erasure markers, in order, as one item; the
    # markers go to the users' fold only
    accepted = op.branch("accepted", parsed, _accepted)
    batches = accepted.trues

    ttl = settings.dataflow.state_ttl_seconds
    topic = settings.kafka.events_topic
    shard = shard_keys(settings.dataflow.state_shards)
    by_user: Stream[tuple[str, dict[str, list[Parsed]]]] = op.flat_map_batch(
        "by_user", batches, _Shard(shard, folders.users.key)
    )
    users = ShardState.builder(folders.users, ttl, topic)
    folded = _keyed("users_out", op.stateful_batch("fold_users", by_user, users))
    states = op.branch("user_folded", folded, _folded)
    # the users' fold also emits UserErased (``KeyErased.emit``), in order with the states
    user_states = cast(Stream[tuple[str, UserState | UserErased]], states.trues)
    op.output("user_state", user_states, sinks.user_state)

    failures = states.falses
    if settings.fold.trending_enabled:
        counted = _trend_steps(settings, batches, shard, folders.items, sinks.item_trends)
        failures = op.merge("failed", failures, counted)
    # Bytewax's branch narrows only its true side: the false sides hold the Rejected.
    failed = op.map("fold_failed", failures, _value)
    rejected = op.merge("rejected", cast(Stream[Rejected], accepted.falses), failed)
    if catalog is not None:
        rejected = op.merge("all_rejected", rejected, _catalog_steps(flow, catalog))
    op.output("dead_letter", op.map("count_rejected", rejected, dead_letter), sinks.dead_letter)
    return flow


def _trend_steps(
    settings: Settings,
    batches: Stream[_Batch],
    shard: Callable[[str], str],
    items: TrendFolder,
    sink: Sink[tuple[str, Trend]],
) -> Stream[tuple[str, object]]:
    """Each item's decayed count into ``sink``; returns the failed folds (their false
    side: the keyed ``Rejected``)."""
    # events count for their item; users' erasure markers do not
    by_item = cast(
        Stream[tuple[str, dict[str, list[Accepted]]]],
        op.flat_map_batch("by_item", batches, _Shard(shard, items.key, Accepted)),
    )
    counts = ShardState.builder(
        items,
        settings.dataflow.state_ttl_seconds,
        settings.kafka.events_topic,
        settings.dataflow.trend_emit_seconds,
    )
    counted = _keyed("items_out", op.stateful_batch("count_items", by_item, counts))
    trends = op.branch("item_counted", counted, _folded)
    op.output("item_trends", cast(Stream[tuple[str, Trend]], trends.trues), sink)
    return trends.falses


def _catalog_steps(flow: Dataflow, catalog: CatalogInput) -> Stream[Rejected]:
    """Catalogue writes into the store; returns the ones rejected or failed."""
    messages = op.input("items", flow, catalog.source)
    parsed = op.flat_map_batch("parse_items", messages, parse_items)
    valid = op.branch("item_valid", parsed, _item_valid)
    keyed = op.key_on("catalog_key", valid.trues, catalog_key)
    applied = op.stateful_batch("catalog", keyed, catalog_builder(catalog.writer))
    failed = op.map("catalog_failed", applied, _value)
    return op.merge("items_rejected", cast(Stream[Rejected], valid.falses), failed)


def _item_valid(x: ItemMessage | Rejected) -> TypeGuard[ItemMessage]:
    return x.__class__ is ItemMessage


@dataclass(frozen=True, slots=True)
class _Batch:
    """A micro-batch's events and erasure markers, in partition order."""

    values: list[Parsed]


class _Split:
    """Parse a micro-batch: its rejected messages one by one (for the dead-letter topic),
    the rest as one ``_Batch``. Bytewax's cost is per item it moves (~1 us per step), so
    the events travel to the folds in one item per batch and shard, not one per event."""

    def __init__(self, parse: Callable[[list[Message]], list[Parsed | Rejected]]):
        self._parse = parse

    def __call__(self, msgs: list[Message]) -> list[_Batch | Rejected]:
        parsed = self._parse(msgs)
        good = [v for v in parsed if not isinstance(v, Rejected)]
        if len(good) == len(parsed):
            return [_Batch(good)] if good else []
        out: list[_Batch | Rejected] = [v for v in parsed if isinstance(v, Rejected)]
        return [*out, _Batch(good)] if good else out


class _Shard:
    """Micro-batches -> (the Bytewax key of a shard, its values by key, each key's in
    order), one per shard the batches touch; with ``only``, the values of that class
    only. Each value's key is computed here once: ``ShardState`` takes the groups as
    they are."""

    def __init__(
        self, shard: Callable[[str], str], key: Callable[[Any], str], only: type | None = None
    ) -> None:
        self._shard = shard
        self._key = key
        self._only = only

    def __call__(self, batches: list[_Batch]) -> list[tuple[str, dict[str, list[Parsed]]]]:
        shard, key_of, only = self._shard, self._key, self._only
        chunks: dict[str, dict[str, list[Parsed]]] = {}
        for b in batches:
            for v in b.values:
                if only is not None and v.__class__ is not only:
                    continue
                k = key_of(v)
                s = shard(k)
                groups = chunks.get(s)
                if groups is None:
                    chunks[s] = {k: [v]}
                elif (g := groups.get(k)) is None:
                    groups[k] = [v]
                else:
                    g.append(v)
        return list(chunks.items())


def _keyed(step_id: str, shards: Stream[tuple[str, tuple[str, T]]]) -> Stream[tuple[str, T]]:
    """A stateful step's output, keyed by its keys (users, items) instead of shards."""
    return op.flat_map_batch(step_id, shards, _unshard)


def _unshard(batch: list[tuple[str, tuple[str, T]]]) -> list[tuple[str, T]]:
    return [kv for _, kv in batch]


def _accepted(x: _Batch | Rejected) -> TypeGuard[_Batch]:
    return x.__class__ is _Batch


def _folded(kv: tuple[str, object]) -> bool:
    return not isinstance(kv[1], Rejected)


def _value(kv: tuple[str, object]) -> Rejected:
    """A failed fold's dead letter (``_folded`` sent only those here)."""
    return cast(Rejected, kv[1])


def kafka_flow(
    settings: Settings,
    store: FeatureStore,
    catalogs: CatalogProvider,
    stop: threading.Event | None = None,
    progress: SourceProgress | None = None,
    writes: StoreWrites | None = None,
) -> Dataflow:
    """The production flow: the events topic in, dead letters to their topic, features to
    ``store``. Setting ``stop`` ends the source's partitions, and so the flow (and a store
    write being retried). ``progress`` gets the source's positions (consumer lag);
    ``writes`` retries the store writes and tells how they fare."""
    writes = writes or StoreWrites(stop)
    sinks = Sinks(
        dead_letter_sink(settings), UserStateSink(store, writes), TrendSink(store, writes)
    )
    folders = Folders.create(settings, store, catalogs, events_log_id(settings))
    source = StoppableKafkaSource(settings, stop, progress=progress)
    items = CatalogInput(
        StoppableKafkaSource(settings, stop, topic=settings.kafka.items_topic),
        CatalogWriter(store, catalogs, text_encoder(settings.catalog.warm_encoder), writes),
    )
    return build_flow(settings, source, sinks, folders, items)


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


def get_flow(
    stop: threading.Event | None = None, progress: SourceProgress | None = None
) -> Dataflow:
    """Factory for ``python -m dataflow.run`` (and ``bytewax.run "dataflow.flow:get_flow()"``);
    ``progress`` gets the source's positions, for the consumer lag."""
    settings = get_settings()
    configure_logging(settings.log_json)
    store = FeatureStore.open(settings)
    atexit.register(store.close)
    catalogs = store.catalog_provider()
    wait_for_model(catalogs, stop)
    return kafka_flow(settings, store, catalogs, stop, progress)
