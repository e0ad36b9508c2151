"""`recsys bench catalog`: catalogue writes per second through the dataflow, and what the
text encoder costs per item.

    recsys bench catalog [--items 2000] [--batch 100] [--repeat 3]

One run, on a dev broker (tansu, in memory) started on a free port and stopped at the end,
with the synthetic world's model (``bench.synthetic``) and a random item-tower head of
the trained shape (the head's cost does not depend on its weights):

1. ``--items`` new items (title, description, a category) are produced to a fresh items
   topic, ``--batch`` per producer flush, as ``POST /items`` would;
2. the production flow (``dataflow.flow.kafka_flow``, recovery on) reads them on a fresh
   store until the runtime catalogue holds all of them: **writes/s with the encoder**;
3. the same on another fresh topic and store with the encoder left out (items placed by
   their categories): **writes/s without it**, the baseline of the ratio;
4. the encoder alone on the same texts in batches of ``--batch``: **ms per item**.

Rounds alternate (2, 3, 4) ``--repeat`` times; medians are reported.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import typer
from bytewax.testing import TestingSink
from confluent_kafka import Producer

from bench.flow import FlowOptions, FlowRunner
from bench.synthetic import World, WorldConfig
from core.items import ItemHead, Upsert, encode, item_text
from core.records import ItemRecord
from core.settings import Settings, nested
from dataflow.catalog import CatalogWriter, Encode, text_encoder
from dataflow.flow import CatalogInput, Folders, Sinks, build_flow, tune_gc
from dataflow.recovery import recovery_config
from dataflow.source import StoppableKafkaSource
from eventlog.admin import ensure_topics
from featurestore.store import FeatureStore
from infra.broker import DevBroker, free_port

VERSION = "bench-catalog"
TEXT_DIM = 384

app = typer.Typer(add_completion=False)


def random_head(world: World, seed: int = 0) -> ItemHead:
    """An item-tower head of the trained shape for the synthetic model's space."""
    rng = np.random.default_rng(seed)
    names = [world.category_name(c) for c in range(world.cfg.categories)]
    width, hidden, dim = TEXT_DIM + 32 + len(names), 256, world.cfg.dim
    return ItemHead(
        (rng.normal(size=(width, hidden)) * 0.05).astype(np.float32),
        np.zeros(hidden, np.float32),
        (rng.normal(size=(hidden, dim)) * 0.05).astype(np.float32),
        np.zeros(dim, np.float32),
        rng.normal(size=32).astype(np.float32),
        names,
    )


def item_writes(world: World, n: int, tag: str) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(7)
    words = ["storm", "harbour", "letters", "winter", "engine", "garden", "signal", "river"]
    out = []
    for k in range(n):
        title = f"The {rng.choice(words)} of {rng.choice(words)} {k}"
        body = f"A story about {rng.choice(words)}, {rng.choice(words)} and {rng.choice(words)}."
        cat = world.category_name(int(rng.integers(world.cfg.categories)))
        w = Upsert(item_id=f"{tag}-{k}", title=title, description=body, categories=[cat])
        out.append((w.item_id.encode(), encode(w)))
    return out


def produce(bootstrap: str, topic: str, writes: list[tuple[bytes, bytes]], batch: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for start in range(0, len(writes), batch):
        for key, value in writes[start : start + batch]:
            p.produce(topic, value, key)
        p.flush(30)


def timed_run(
    base: Settings,
    world: World,
    head: ItemHead,
    state_dir: Path,
    n: int,
    encode_fn: Encode | None,
    timeout: float,
) -> float:
    """Seconds from flow start until the runtime catalogue holds all ``n`` items."""
    settings = base.with_values(
        state_dir=state_dir, model_dir=None, qdrant={"path": None}, recovery={"dir": None}
    )
    store = FeatureStore.open(settings)
    runner: FlowRunner | None = None
    try:
        record, items, vectors, _ = world.model(VERSION, False)
        store.publish_model(record, items, vectors, [], item_head=head)
        store.activate(VERSION)
        catalogs = store.catalog_provider()
        catalogs.refresh()
        stop = threading.Event()
        sinks = Sinks(TestingSink([]), TestingSink([]), TestingSink([]))
        folders = Folders.create(settings, store, catalogs)
        items_in = CatalogInput(
            StoppableKafkaSource(settings, stop, topic=settings.kafka.items_topic),
            CatalogWriter(store, catalogs, encode_fn),
        )
        events = StoppableKafkaSource(settings, stop)
        flow = build_flow(settings, events, sinks, folders, items_in)
        tune_gc()
        runner = FlowRunner(
            flow, settings, stop, FlowOptions(workers=1), None, recovery_config(settings)
        ).start()
        deadline = time.monotonic() + timeout
        while store.runtime.revision() < n:
            runner.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{store.runtime.revision():.0f}/{n} items after {timeout:.0f}s")
            time.sleep(0.02)
        return time.perf_counter() - runner.started
    finally:
        if runner is not None:
            runner.stop()
        store.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def encoder_alone(encode_fn: Encode, texts: list[str], batch: int) -> float:
    """Seconds per item of the encoder on ``texts``, ``batch`` at a time."""
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        encode_fn(texts[start : start + batch])
    return (time.perf_counter() - t0) / len(texts)


@app.command()
def main(
    items: Annotated[int, typer.Option(min=1, help="Catalogue writes per run.")] = 2_000,
    batch: Annotated[int, typer.Option(min=1, help="Writes per producer flush.")] = 100,
    repeat: Annotated[int, typer.Option(min=1, help="Rounds.")] = 3,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds per run.")] = 600.0,
) -> None:
    """Catalogue writes/s through the dataflow, with and without the text encoder."""
    encode_fn = text_encoder(warm=False)
    if encode_fn is None:
        raise typer.BadParameter("the text encoder is not installed: pip install -e '.[train]'")
    tmp = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    broker = DevBroker(free_port(), log_path=tmp / "broker.log")
    try:
        broker.start()
        world = World(WorldConfig(users=100, items=2_000, seed=0))
        head = random_head(world)
        texts = [
            item_text(ItemRecord("x", f"Warm-up {k}", ["c0"], extra={"description": "x"}))
            for k in range(64)
        ]
        encode_fn(texts)  # load the model before any clock starts
        results: dict[str, list[float]] = {"with": [], "without": [], "ms_per_item": []}
        for r in range(repeat):
            for label, fn in (("with", encode_fn), ("without", None)):
                topic = f"bench.items.{r}.{label}"
                base = _settings(broker.bootstrap, tmp, topic)
                ensure_topics(broker.bootstrap, {topic: 4, base.kafka.events_topic: 1})
                writes = item_writes(world, items, f"{label}{r}")
                produce(broker.bootstrap, topic, writes, batch)
                dt = timed_run(base, world, head, tmp / f"s-{r}-{label}", items, fn, timeout)
                results[label].append(items / dt)
            sample = [item_text(_record(v)) for _, v in item_writes(world, items, "enc")]
            results["ms_per_item"].append(1000 * encoder_alone(encode_fn, sample, batch))
            print(
                f"  #{r + 1}: {results['with'][-1]:,.0f} writes/s with the encoder, "
                f"{results['without'][-1]:,.0f} without; encoder alone "
                f"{results['ms_per_item'][-1]:.2f} ms/item",
                flush=True,
            )
        _summary(results, items, batch)
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _record(value: bytes) -> ItemRecord:
    w = msgspec.json.decode(value)
    return ItemRecord(
        w["item_id"], w["title"], w["categories"], extra={"description": w["description"]}
    )


def _settings(bootstrap: str, tmp: Path, topic: str) -> Settings:
    values: dict[str, Any] = nested(
        dict(
            bootstrap_servers=bootstrap,
            events_topic=f"{topic}.events",
            items_topic=topic,
            dead_letter_topic=f"{topic}.dlq",
            state_dir=tmp,
            url=None,
            start_offset="earliest",
        )
    )
    return Settings(**values)


def _summary(results: dict[str, list[float]], items: int, batch: int) -> None:
    med: Callable[[list[float]], float] = statistics.median
    w, wo, ms = med(results["with"]), med(results["without"]), med(results["ms_per_item"])
    print(
        f"\ncatalogue writes through the dataflow ({items:,} new items per run, {batch} per "
        f"flush; medians of {len(results['with'])}):\n"
        f"  with the text encoder      {w:>9,.0f} writes/s\n"
        f"  without (by categories)    {wo:>9,.0f} writes/s\n"
        f"  ratio with / without       {w / wo:>9.3f}\n"
        f"  encoder alone              {ms:>9.2f} ms/item (batches of {batch})\n"
        f"  encoder share of a write   {min(1.0, ms / 1000 * w):>9.0%}"
    )


if __name__ == "__main__":
    app(prog_name="python -m bench.catalog")
