"""Catalogue writes: the items topic folded into the runtime catalogue and the live
model's rows.

    items topic -> parse (core.items) --(rejected)--> dead-letter topic (bytes + reason)
                        |
                        +-- one key --> merge, embed the text, write the store, in order

Every catalogue write goes to one key, so one worker applies them all in topic order
per item, and hands out slots alone (``featurestore.runtime``). A write's item vector
comes from the live model's item tower (``core.items.ItemHead``) applied to the text
vector the encoder gives; without an encoder installed, from its categories.

Delivery: at-least-once, idempotent. Writes are upserts by deterministic ids, applied
in order and retried until they succeed (``StoreWrites``); after a crash the resumed
flow applies the same messages again and the store ends in the same state. A write
that cannot apply (a patch of an unknown item) is dead-lettered with its reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from bytewax.operators import StatefulBatchLogic
from confluent_kafka import Message
from prometheus_client import Counter, Histogram

import encoder
from core.catalog import Catalog, CatalogProvider
from core.items import CatalogEntry, ItemHead, ItemWrite, apply, decode, item_text, text_changed
from core.records import ItemRecord
from dataflow.deadletter import Rejected
from dataflow.sinks import StoreWrites
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

ITEMS_WRITTEN = Counter(
    "recsys_catalog_writes_total", "Catalogue writes applied by the dataflow", ["op"]
)
EMBED_SECONDS = Histogram(
    "recsys_catalog_embed_seconds",
    "Text encoding of one batch of catalogue writes",
    buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10),
)

Encode = Callable[[list[str]], np.ndarray]
"""Texts -> (n, text_dim) L2-normalised vectors (the ``encoder`` package)."""

CATALOG_KEY = "catalog"


@dataclass(slots=True)
class ItemMessage:
    """A valid catalogue write, and the message it came in (as a dead letter in waiting:
    Kafka's message objects do not cross workers)."""

    write: ItemWrite
    origin: Rejected


def parse_items(msgs: list[Message]) -> list[ItemMessage | Rejected]:
    """Each message as a write, or as a dead letter with the contract's reason."""
    out: list[ItemMessage | Rejected] = []
    for m in msgs:
        try:
            if m.error() is not None:
                out.append(Rejected.of_message(m, f"kafka error: {m.error()}", "kafka_error"))
            elif not m.value():
                out.append(Rejected.of_message(m, "empty message", "empty"))
            else:
                out.append(ItemMessage(decode(m.value() or b""), Rejected.of_message(m, "", "")))
        except ValueError as e:  # InvalidItem
            out.append(Rejected.of_message(m, str(e), getattr(e, "kind", "invalid_field")))
        except Exception as e:  # no message may stop the flow
            log.exception("parsing an items message failed")
            out.append(Rejected.of_message(m, f"internal error: {e}", "internal_error"))
    return out


def catalog_key(_: ItemMessage) -> str:
    return CATALOG_KEY


class CatalogWriter:
    """Applies catalogue writes to the store: the runtime catalogue, then the live
    version's rows (and the next version's, if one went live meanwhile)."""

    def __init__(
        self,
        store: FeatureStore,
        catalogs: CatalogProvider,
        encode: Encode | None,
        writes: StoreWrites | None = None,
    ) -> None:
        self._store = store
        self._catalogs = catalogs
        self._encode = encode
        self._writes = writes or StoreWrites()
        self._heads: dict[str, ItemHead | None] = {}

    def _head(self, version: str) -> ItemHead | None:
        """The version's item tower, read once (a version's head never changes)."""
        if version not in self._heads:
            if len(self._heads) >= 4:
                self._heads.pop(next(iter(self._heads)))
            self._heads[version] = self._store.item_head(version)
        return self._heads[version]

    def apply(self, writes: Sequence[tuple[ItemWrite, Any]]) -> list[tuple[Any, str, str]]:
        """Apply ``writes`` (write, tag) in order; returns (tag, reason, kind) of the
        ones that cannot apply."""
        catalog = self._catalogs.refresh()
        if catalog is None:
            raise RuntimeError("no model is published: catalogue writes wait for one")
        ids = list(dict.fromkeys(w.item_id for w, _ in writes))
        known = self._store.runtime.get(ids)
        current: dict[str, ItemRecord] = {e.record.item_id: e.record for e in known.values()}
        texts: dict[str, np.ndarray] = {i: e.text_vector for i, e in known.items()}
        changed: dict[str, ItemRecord] = {}
        failed = []
        for write, tag in writes:
            base = current.get(write.item_id) or _trained(catalog, write.item_id)
            after = apply(base, write)
            if after is None:
                failed.append(
                    (tag, f"item {write.item_id!r} is not in the catalogue", "unknown_item")
                )
                continue
            if text_changed(base, after):
                texts.pop(write.item_id, None)
            current[write.item_id] = changed[write.item_id] = after
            ITEMS_WRITTEN.labels(type(write).__name__.lower()).inc()
        if changed:
            self._embed_missing(changed, texts)
            pairs = [(r, texts[i]) for i, r in changed.items()]
            self._writes.write("catalog_items", self._write, pairs)
            self._catalogs.refresh()  # this process's folds know the new items at once
        return failed

    def _embed_missing(self, changed: dict[str, ItemRecord], texts: dict[str, np.ndarray]) -> None:
        todo = [i for i in changed if i not in texts]
        if not todo:
            return
        t0 = time.perf_counter()
        vectors = self._text_vectors([item_text(changed[i]) for i in todo])
        EMBED_SECONDS.observe(time.perf_counter() - t0)
        texts.update(zip(todo, vectors, strict=True))

    def _text_vectors(self, texts: list[str]) -> np.ndarray:
        if self._encode is None:
            # Zero text vectors: placed by their categories (``core.items.place``).
            return np.zeros((len(texts), encoder.TEXT_DIM), dtype=np.float32)
        return np.asarray(self._encode(texts), dtype=np.float32)

    def _write(self, pairs: Sequence[tuple[ItemRecord, np.ndarray]]) -> None:
        entries = self._store.runtime.put(pairs)
        written: set[str] = set()
        while (version := self._store.active_version()) not in written and version is not None:
            self._write_rows(version, entries)
            written.add(version)  # a model that went live meanwhile gets them too

    def _write_rows(self, version: str, entries: list[CatalogEntry]) -> None:
        catalog = self._catalogs.current
        if catalog is None or catalog.version != version:
            catalog = self._store.load_catalog(version)
        n = catalog.trained
        head = self._head(version)
        self._store.runtime.write_rows(
            version, entries, catalog.items[:n], catalog.vectors[:n], head
        )


def _trained(catalog: Catalog, item_id: str) -> ItemRecord | None:
    row = catalog.index.get(item_id)
    return None if row is None else catalog.items[row]


class CatalogStep(StatefulBatchLogic[ItemMessage, Rejected, None]):
    """The one key every catalogue write goes to: applies each micro-batch in order and
    emits the writes that cannot apply as dead letters. Holds no state of its own (the
    store is the state), so its recovery snapshot is empty."""

    def __init__(self, writer: CatalogWriter) -> None:
        self._writer = writer

    def on_batch(self, values: list[ItemMessage]) -> tuple[list[Rejected], bool]:
        try:
            failed = self._writer.apply([(v.write, v.origin) for v in values])
        except Exception:
            return self._apart(values), StatefulBatchLogic.RETAIN
        return [_dead(o, r, k) for o, r, k in failed], StatefulBatchLogic.RETAIN

    def _apart(self, values: list[ItemMessage]) -> list[Rejected]:
        """After a batch raised: each write alone, the ones that still raise dead-lettered
        (applying a write twice changes nothing)."""
        out: list[Rejected] = []
        for v in values:
            try:
                failed = self._writer.apply([(v.write, v.origin)])
                out.extend(_dead(o, r, k) for o, r, k in failed)
            except Exception as e:
                log.exception("applying a catalogue write failed; dead-lettered")
                reason = f"internal error: {type(e).__name__}: {e}"
                out.append(_dead(v.origin, reason, "internal_error"))
        return out

    def snapshot(self) -> None:
        return None


def _dead(origin: Rejected, reason: str, kind: str) -> Rejected:
    return replace(origin, reason=reason, kind=kind)


def catalog_builder(writer: CatalogWriter) -> Callable[[None], CatalogStep]:
    return lambda _resume: CatalogStep(writer)


def text_encoder(warm: bool) -> Encode | None:
    """The ``encoder`` package's ``encode``, or None (and a warning) when the text
    encoder is not installed (it comes with the ``[train]`` extra)."""
    if not encoder.available():
        log.warning(
            "the text encoder (sentence-transformers) is not installed: catalogue writes "
            "are placed by their categories only (pip install -e '.[train]')"
        )
        return None
    if warm:
        threading.Thread(target=encoder.warm, name="encoder-warm", daemon=True).start()
    return encoder.encode
