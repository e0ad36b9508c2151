"""The evaluation measures the product as a client gets it: a slice of `just eval`'s
MovieLens replay (same split: 80 % time cutoff, 10 % of items held out, seed 42) goes
through the real broker, the dataflow and `GET /recommendations/{user}?k=10` over HTTP,
and must hit exactly where the in-process harness (``evaluation.prequential.replay``)
hits on the same slice, so the two paths cannot drift apart. Held-out items arrive as
the harness adds them, before their first event: here by ``POST /items``, through the
items topic and the dataflow, embedded by the real text encoder and the model's item
tower.

A cheap model stands in for the two-tower (a truncated SVD of the training matrix, the
identity as user head): the test is about the two paths agreeing, not about the model.
The server runs in this process so that its clock can be the replay's (the time of the
event about to happen, as `just eval` runs it); everything else is the product as
`recsys serve` starts it: the event is produced to Kafka by a client, folded by the
in-process dataflow, and the recommendation is read over HTTP with nothing but `k`.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
import uvicorn
from confluent_kafka import Producer

from core.items import ItemHead
from core.records import UserHead
from core.settings import Settings
from evaluation.arrivals import Arrivals
from evaluation.bundle import Bundle, assemble
from evaluation.prequential import Features, ReplayClock, events_of, replay
from evaluation.scoring import rank_of
from evaluation.split import Split, temporal_split
from eventlog.producer import PRODUCER_CONFIG, close_producer
from featurestore.store import FeatureStore
from infra.broker import free_port
from infra.serve import build_app
from tests.helpers import isolated_settings, require_movielens, wait_for
from training.data import Interactions, index_of, load_movielens

pytestmark = pytest.mark.integration

EVENTS = 300
K = 10
DATA = Settings().data_dir


def svd_bundle(
    train: Interactions, items: list, settings: Settings, held_out: frozenset[str], dim: int = 32
) -> Bundle:
    """Item vectors from a truncated SVD of the user x item matrix of ``train``; items
    without training events get small random vectors. ``held_out`` items are left out
    of the catalogue, to arrive as the replay meets them, placed by a random item head
    over the encoder's text vectors."""
    arriving = [i for i in items if i.item_id in held_out]
    items = [i for i in items if i.item_id not in held_out]
    item_ids = [i.item_id for i in items]
    rows = index_of(train.item_ids, item_ids)
    _, users = np.unique(train.user_ids, return_inverse=True)
    m = np.zeros((users.max() + 1, len(items)), np.float32)
    m[users, rows] = 1.0
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    vecs = (vt[:dim].T * np.sqrt(s[:dim])).astype(np.float32)
    cold = np.linalg.norm(vecs, axis=1) < 1e-6
    vecs[cold] = np.random.default_rng(0).normal(size=(int(cold.sum()), dim)) * 1e-3
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    zeros = np.zeros((dim, 1), np.float32)
    head = UserHead(zeros, np.zeros(1, np.float32), zeros.T.copy(), np.zeros(dim, np.float32))
    bundle = assemble(train, items, vecs, head, settings)
    names = sorted({c for i in items for c in i.categories})
    rng = np.random.default_rng(1)
    bundle.item_head = ItemHead(
        rng.normal(size=(384 + 2 + len(names), 64)).astype(np.float32),
        np.zeros(64, np.float32),
        rng.normal(size=(64, dim)).astype(np.float32),
        np.zeros(dim, np.float32),
        rng.normal(size=2).astype(np.float32),
        names,
    )
    bundle.held_out = arriving  # their text vectors: the encoder's, in both paths
    return bundle


@pytest.fixture(scope="module")
def movielens() -> tuple[Split, list, Interactions]:
    require_movielens(DATA)
    inter, items = load_movielens(DATA)
    split = temporal_split(inter, items, 0.8, 0.1, 42)
    return split, items, split.test.take(slice(0, EVENTS))


class Server:
    """``infra.serve.build_app`` under uvicorn on a free port, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.app = build_app(settings)
        self.port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=60)
        wait_for(lambda: self.get("/readyz")[0] == 200, timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            conn.close()

    @property
    def store(self) -> FeatureStore:
        return self.app.state.resources.store


def produce(producer: Producer, topic: str, ev) -> tuple[int, int]:
    """One event as a third-party client sends it; (partition, offset) once acknowledged."""
    delivered: list = []
    body = {
        "event_type": ev.event_type,
        "user_id": ev.user_id,
        "item_id": ev.item_id,
        "timestamp": ev.ts,
    }
    producer.produce(
        topic,
        key=ev.user_id.encode(),
        value=json.dumps(body).encode(),
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )
    assert producer.flush(30) == 0
    ((err, msg),) = delivered
    assert err is None, err
    return msg.partition(), msg.offset()


def rest_ranks(
    settings: Settings, split: Split, bundle: Bundle, test: Interactions, root: Path
) -> Iterator[int]:
    """The slice through the broker and the REST API: for each event, POST its item first
    if it is a held-out item the replay meets for the first time (and wait until it is
    served), GET its user's top-k, then produce the event and wait until the dataflow
    folded it."""
    prepared = Features(root, settings, bundle)  # the store at the cutoff, as the harness's
    prepared.feed(list(events_of(split.train)), write_each=False)
    prepared.close()
    rows = {it.item_id: r for r, it in enumerate(bundle.catalogue())}
    arrivals = Arrivals(bundle.held_out)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, **PRODUCER_CONFIG})
    try:
        with Server(prepared.settings) as srv:
            clock = ReplayClock()
            srv.app.state.resources.recommender.clock = clock
            recommender = srv.app.state.resources.recommender
            for ev in events_of(test):
                clock.now = ev.ts
                if (write := arrivals.due(ev.item_id)) is not None:
                    status, body = srv.post("/items", msgspec.json.encode(write))
                    assert status == 202, body
                    wait_for(lambda i=ev.item_id: i in recommender.catalog().index, timeout=30)
                status, body = srv.get(f"/recommendations/{ev.user_id}?k={K}")
                assert status == 200, body
                yield rank_of([rows[i["item_id"]] for i in body["items"]], rows[ev.item_id], K)
                before = srv.store.read_user_state(ev.user_id)
                count = 0 if before is None else before.event_count
                part, offset = produce(producer, settings.kafka.events_topic, ev)
                wait_for(
                    lambda u=ev.user_id, c=count: (
                        (s := srv.store.read_user_state(u)) and s.event_count == c + 1
                    ),
                    timeout=30,
                )
                wait_for(
                    lambda i=ev.item_id, p=part, o=offset: (
                        (t := srv.store.read_trends([i]).get(i)) and t.offsets.get(p) == o
                    ),
                    timeout=30,
                )
    finally:
        close_producer(producer, 5)  # also when the caller stops early


def test_rest_path_hits_where_the_in_process_harness_hits(movielens, broker, tmp_path):
    split, items, test = movielens
    settings = isolated_settings(
        tmp_path / "var",
        broker,
        trend_emit_seconds=0.0,  # each trend write at once: the harness writes per event
        auto_publish_latest=False,
        impressions_enabled=False,
        min_timestamp="1990-01-01T00:00:00Z",  # MovieLens 100K was rated in 1997-98
    )
    bundle = svd_bundle(split.train, items, settings, split.cold_items)

    t0 = time.perf_counter()
    harness = replay(split.train, test, bundle, settings, seed=42, names=("product",), quiet=True)
    t_harness = time.perf_counter() - t0
    t0 = time.perf_counter()
    rest = np.fromiter(rest_ranks(settings, split, bundle, test, tmp_path / "rest"), np.int64)
    t_rest = time.perf_counter() - t0

    inproc = harness.ranks["product"]
    hr_rest, hr_inproc = float((rest > 0).mean()), float((inproc > 0).mean())
    print(
        f"HR@{K} on {EVENTS} events: REST {hr_rest:.4f} ({t_rest:.0f}s), "
        f"in-process {hr_inproc:.4f} ({t_harness:.0f}s)"
    )
    assert hr_inproc > 0.05  # a slice with hits to compare
    assert split.cold_items & set(test.item_ids.tolist())  # and held-out items arriving
    np.testing.assert_array_equal(rest > 0, inproc > 0)  # the same hits, event by event
    np.testing.assert_array_equal(rest, inproc)  # at the same positions
