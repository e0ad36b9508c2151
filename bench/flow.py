"""`just bench-dataflow`: how fast the dataflow folds a Kafka topic into the store, and how
fresh a new event is once it has caught up.

    recsys bench flow [--events 1000000] [--repeat 2] [--workers 1,2]
                      [--rate 5000] [--duration 10] [--no-api]
                      [--against CHECKOUT] [--hold N]

One run, on a dev broker (tansu, in memory) started on a free port and stopped at the end:

1. produces E synthetic events (``bench.synthetic``) to a 4-partition topic;
2. for each worker count W (one process, run by the product's ``dataflow.runner.run_flow``):
   (a) ceiling: a no-op flow (the product's ``StoppableKafkaSource`` and ``Parser`` into a
   counting sink) reads the whole topic; (b) product: ``dataflow.flow.kafka_flow`` (the
   production flow) with an embedded store holding the synthetic model and Bytewax
   recovery on (as it ships) reads the same topic from
   the beginning, until every user's ``event_count`` in the store equals what was
   produced. Each is timed from flow start, so both include Kafka start-up; they
   alternate, ``--repeat`` times, and the medians and their ratio are reported;
3. (c) freshness: each round on its own new dev broker, with a caught-up 1-worker flow,
   one event per new, distinct user is produced at a steady rate (``--rate`` for
   ``--duration`` s). Product, twice: produce -> the sink's store write returned (noted by
   the store, nothing else running), then the same plus a thread polling
   ``store.read_user_states`` for every 50th user (what a reader sees; the poller costs
   the flow GIL time). Ceiling: produce -> the event reached the counting sink, i.e. what
   Kafka (here the dev broker) and Bytewax alone cost;
4. (d) freshness through the API: ``python -m infra.serve`` (API + in-process dataflow on
   its own embedded store, as ``just serve`` runs) on a fresh topic; the same load, and
   every 100th user is polled through ``GET /users/{id}`` until it shows the event.
5. (e) with ``--against CHECKOUT`` (a git worktree of another version), each round also runs
   that version's product flow through its own ``python -m bench.flow`` on the same
   synthetic events, so the two versions compare in one run ("against wN").

``--hold N``: before each product freshness round the flow folds one event for each of N
new users, so the round measures freshness with N users held.

Completion of (b) is detected without extra reads: the store handed to the flow notes when
each user's write carrying their final count returned (a dict lookup per written state);
the counts are then verified by reading every user back. Both flows run with the
product's interpreter settings (``dataflow.flow.tune_gc``) and epoch length.

``--epoch-s`` overrides the epoch interval (``RECSYS_RECOVERY_EPOCH_SECONDS``) for both flows, and
``--no-recovery`` runs the product without recovery: experiments, not what ships.
"""

from __future__ import annotations

import contextlib
import cProfile
import http.client
import io
import json
import os
import pstats
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import bytewax.operators as op
import numpy as np
import typer
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from bench.synthetic import Events, World, WorldConfig, produce, producer_config
from core.progress import Progress
from core.records import iso
from core.settings import Settings, nested
from core.state import RecentItem, Trend, UserState
from dataflow.flow import kafka_flow, tune_gc
from dataflow.parsing import Accepted, Parser
from dataflow.recovery import recovery_config
from dataflow.runner import run_flow
from dataflow.source import StoppableKafkaSource
from eventlog.admin import ensure_app_topics
from featurestore.store import FeatureStore
from infra.broker import DevBroker, free_port
from infra.process import ServeProcess, process_cpu_seconds

VERSION = "bench-1"
POLL_SAMPLE = 50
"""Freshness through reads: every 50th user is polled (more cost the flow GIL time)."""
TOPIC = "bench.events"


@dataclass(frozen=True)
class FlowOptions:
    """How flows are run: defaults are the product's (``DataflowThread``)."""

    epoch: timedelta | None = None
    workers: int = 1
    recovery: bool = False
    """Bytewax recovery (the product runs with it, as it ships; the no-op flow without)."""


def cpu_seconds() -> float:
    """Process CPU, all threads (Bytewax, librdkafka, Qdrant Edge, ours)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuClock:
    """CPU seconds of this process and of the broker: on 2 cores the broker's share matters."""

    def __init__(self, broker_pid: int) -> None:
        self._broker_pid = broker_pid

    def broker(self) -> float:
        return process_cpu_seconds(self._broker_pid)

    def now(self) -> tuple[float, float, float]:
        """(wall, own CPU, broker CPU)."""
        return time.perf_counter(), cpu_seconds(), self.broker()

    def cores(self, since: tuple[float, float, float]) -> tuple[float, float]:
        """Average cores used since ``since``: (own, broker)."""
        wall, own, broker = self.now()
        dt = wall - since[0]
        return (own - since[1]) / dt, (broker - since[2]) / dt


# --- running a flow in a thread -------------------------------------------------------


class FlowRunner:
    """The product's ``dataflow.runner.run_flow`` in a thread, stopped through the source's
    stop event (as in production)."""

    def __init__(
        self,
        flow: Dataflow,
        settings: Settings,
        stop: threading.Event,
        opts: FlowOptions,
        profile: cProfile.Profile | None = None,
        recovery: RecoveryConfig | None = None,
    ) -> None:
        self._flow = flow
        self._settings = settings
        self._epoch = opts.epoch
        self._workers = opts.workers
        self._recovery = recovery
        self.stop_event = stop
        self._profile = profile
        self.started = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-flow", daemon=True)

    @property
    def workers(self) -> int:
        return self._workers

    def start(self) -> FlowRunner:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            if self._profile is not None:
                self._profile.enable()  # profiles this thread: the flow's Python steps
            self.started = time.perf_counter()
            run_flow(self._flow, self._settings, self._recovery, self._workers, epoch=self._epoch)
        except BaseException as e:  # reported by check()
            self.error = e
        finally:
            if self._profile is not None:
                self._profile.disable()

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the flow crashed: {self.error!r}") from self.error
        if not self._thread.is_alive():
            raise RuntimeError("the flow ended before it was stopped")

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            print(f"warning: the flow did not stop within {timeout:.0f}s", file=sys.stderr)


@dataclass
class RunResult:
    kind: str
    """ceiling or product, with the worker count: "product w2"."""
    events: int
    seconds: float
    first_output_s: float
    """Flow start to first output: Kafka connection and partition assignment."""
    cpu_cores: float
    """Process CPU during the run, all threads, in cores."""
    broker_cores: float
    """The broker's CPU during the run, in cores."""
    store_write_s: float = 0.0
    """Time inside FeatureStore.write_user_states + write_trends (product only)."""
    states_written: int = 0
    """User-state points upserted (product only): the sink writes a user once per batch."""
    memory: Memory | None = None
    """What holding the run's users costs (product only)."""

    @property
    def per_s(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True)
class Memory:
    """What the product process holds for its users once all are folded: the growth of
    its resident memory since the flow started (Bytewax's held states, the feature
    store's in-memory segments, allocator slack), and each directory of the state dir
    on disk (the embedded store, Bytewax's recovery partitions)."""

    users: int
    rss_growth: int
    disk: dict[str, int]

    def per_user(self, n: int) -> float:
        return n / self.users


def rss_bytes() -> int:
    """This process's resident memory now (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def disk_bytes(directory: Path) -> dict[str, int]:
    """Bytes on disk under each subdirectory of ``directory``."""
    return {
        d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        for d in sorted(directory.iterdir())
        if d.is_dir()
    }


def print_memory(m: Memory) -> None:
    parts = ", ".join(
        f"{name} {b / 1e6:,.0f} MB ({m.per_user(b):,.0f} B/user)" for name, b in m.disk.items()
    )
    print(
        f"  holding {m.users:,} users: resident memory +{m.rss_growth / 1e6:,.0f} MB "
        f"({m.per_user(m.rss_growth):,.0f} B/user); on disk: {parts}",
        flush=True,
    )


# --- (a) the ceiling --------------------------------------------------------------------


class _CountingPartition(StatelessSinkPartition[Any]):
    def __init__(self, sink: CountingSink) -> None:
        self._sink = sink

    def write_batch(self, items: list[Any]) -> None:
        s = self._sink
        now = time.perf_counter()
        accepted = sum(isinstance(x, Accepted) for x in items)
        if s.watching:
            for x in items:
                if isinstance(x, Accepted) and x.event.user_id in s.watching:
                    s.arrived.setdefault(x.event.user_id, now)
        with s.lock:  # workers write from their own threads
            if s.first is None:
                s.first = now
            s.count += len(items)
            s.accepted += accepted
            if s.count >= s.target and not s.done.is_set():
                s.done_at = now
                s.done.set()


class CountingSink(DynamicSink[Any]):
    """Counts what reaches it, notes when ``target`` items had arrived, and when each
    watched user's first event arrived (for freshness)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.accepted = 0
        self.first: float | None = None
        self.done_at = 0.0
        self.done = threading.Event()
        self.watching: set[str] = set()
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self)


@contextlib.contextmanager
def ceiling_flow(
    settings: Settings,
    n: int,
    opts: FlowOptions,
) -> Iterator[tuple[CountingSink, FlowRunner]]:
    sink = CountingSink(n)
    stop = threading.Event()
    flow = Dataflow("bench_ceiling")
    messages = op.input("events", flow, StoppableKafkaSource(settings, stop))
    op.output("count", op.flat_map_batch("parse", messages, Parser(settings).parse_batch), sink)
    tune_gc()  # before the clock starts: run_flow's own call then finds little to collect
    runner = FlowRunner(flow, settings, stop, opts).start()
    try:
        yield sink, runner
    finally:
        runner.stop()


def wait_ceiling(
    sink: CountingSink,
    runner: FlowRunner,
    timeout: float,
    clock: CpuClock,
    t0: tuple[float, float, float],
) -> RunResult:
    deadline = time.monotonic() + timeout
    while not sink.done.wait(0.25):
        runner.check()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"ceiling flow saw {sink.count}/{sink.target} events in {timeout:.0f}s"
            )
    if sink.accepted < sink.target:
        raise RuntimeError(f"the parser rejected {sink.target - sink.accepted} synthetic events")
    assert sink.first is not None
    return RunResult(
        f"ceiling w{runner.workers}",
        sink.target,
        sink.done_at - runner.started,
        sink.first - runner.started,
        *clock.cores(t0),
    )


# --- (b) the product flow -----------------------------------------------------------------


class TimedStore(FeatureStore):
    """A FeatureStore that notes when each watched user's state reached a target count.

    The note is taken after the write returned, i.e. when a reader could see it; the cost
    is a dict lookup per written state, next to a Qdrant upsert of the whole batch.
    """

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self.targets: dict[str, int] = {}
        self.reached: dict[str, float] = {}
        self.first_write: float | None = None
        self.all_reached = threading.Event()
        self.write_s = 0.0
        self.states_written = 0
        self.rss_at_start = 0
        self.state_dir: Path | None = None

    def watch(self, targets: dict[str, int]) -> None:
        """Add users to watch; ``all_reached`` is set once every watched user got there."""
        self.targets.update(targets)
        self.all_reached = threading.Event()

    def write_user_states(self, states: Sequence[UserState]) -> None:
        t0 = time.perf_counter()
        super().write_user_states(states)
        now = time.perf_counter()
        self.write_s += now - t0
        self.states_written += len(states)
        if self.first_write is None:
            self.first_write = now
        targets, reached = self.targets, self.reached
        for s in states:
            t = targets.get(s.user_id)
            if t is not None and s.event_count >= t and s.user_id not in reached:
                reached[s.user_id] = now
        if len(reached) >= len(targets):
            self.all_reached.set()

    def write_trends(self, trends: Sequence[Trend]) -> None:
        t0 = time.perf_counter()
        super().write_trends(trends)
        self.write_s += time.perf_counter() - t0


def folded_total() -> float:
    return REGISTRY.get_sample_value("recsys_events_folded_total") or 0.0


def verify_counts(store: FeatureStore, expected: dict[str, int], chunk: int = 2000) -> int:
    """How many users' stored event_count differs from what was produced."""
    users = list(expected)
    wrong = 0
    for lo in range(0, len(users), chunk):
        got = store.read_user_states(users[lo : lo + chunk])
        wrong += sum(
            1
            for u in users[lo : lo + chunk]
            if (s := got.get(u)) is None or s.event_count != expected[u]
        )
    return wrong


@contextlib.contextmanager
def product_flow(
    base: Settings,
    world: World,
    expected: dict[str, int],
    state_dir: Path,
    opts: FlowOptions,
    profile: cProfile.Profile | None = None,
) -> Iterator[tuple[TimedStore, FlowRunner]]:
    """A product flow on a fresh store with the synthetic model; stopped and cleaned on exit."""
    settings = base.with_values(
        state_dir=state_dir, model_dir=None, qdrant={"path": None}, recovery={"dir": None}
    )
    store = TimedStore.open(settings)
    assert isinstance(store, TimedStore)
    runner: FlowRunner | None = None
    try:
        world.publish(store, VERSION, with_profiles=False)
        catalogs = store.catalog_provider()
        catalogs.refresh()  # loaded before the clock starts, as wait_for_model does
        store.watch(expected)
        stop = threading.Event()
        flow = kafka_flow(settings, store, catalogs, stop)
        tune_gc()  # before the clock starts: run_flow's own call then finds little to collect
        recovery = recovery_config(settings) if opts.recovery else None
        store.rss_at_start, store.state_dir = rss_bytes(), state_dir
        runner = FlowRunner(flow, settings, stop, opts, profile, recovery).start()
        yield store, runner
    finally:
        if runner is not None:
            runner.stop()
        store.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def wait_product(
    store: TimedStore,
    runner: FlowRunner,
    n: int,
    timeout: float,
    label: str,
    clock: CpuClock,
    t0: tuple[float, float, float],
) -> RunResult:
    base = folded_total()
    bar = Progress(n, label, "ev", quiet=n < 50_000, leave=False)
    deadline = time.monotonic() + timeout
    try:
        while not store.all_reached.wait(0.25):
            runner.check()
            bar.update(int(folded_total() - base) - bar.n)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{label}: {len(store.reached)}/{len(store.targets)} users complete "
                    f"after {timeout:.0f}s"
                )
    finally:
        bar.close()
    assert store.first_write is not None
    done = max(store.reached.values())
    assert store.state_dir is not None
    memory = Memory(
        len(store.targets), rss_bytes() - store.rss_at_start, disk_bytes(store.state_dir)
    )
    return RunResult(
        f"product w{runner.workers}",
        n,
        done - runner.started,
        store.first_write - runner.started,
        *clock.cores(t0),
        store.write_s,
        store.states_written,
        memory,
    )


# --- (c) freshness ----------------------------------------------------------------------


@dataclass
class Freshness:
    flow: str
    offered_rate: float
    achieved_rate: float
    events: int
    arrived: int
    arrive_ms: dict[str, float]
    """Produce -> reached the sink (ceiling) / the sink's store write returned (product)."""
    poll_ms: dict[str, float] | None
    """Produce -> visible to store.read_user_states (product; polled every ~1 ms)."""
    poller_cpu_share: float | None
    """CPU the polling thread used, as a share of one core (it competes with the flow)."""
    idle_cores: tuple[float, float]
    """(process, broker) CPU while the caught-up flow had nothing to do (2 s before)."""
    busy_cores: tuple[float, float]
    """(process, broker) CPU during the test (process: includes producer and poller)."""


def _pcts(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": round(q[49] * 1000, 1),
        "p99": round(q[98] * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def _watcher(store: TimedStore) -> Callable[[list[str]], None]:
    """Watch these users until each has one event folded."""
    return lambda users: store.watch({u: 1 for u in users})


def measure_freshness(
    flow: str,
    settings: Settings,
    runner: FlowRunner,
    world: World,
    clock: CpuClock,
    rate: float,
    duration: float,
    first_user: int,
    seed: int,
    arrived: dict[str, float],
    watch: Callable[[list[str]], None],
    store: FeatureStore | None = None,
) -> Freshness:
    """Produce one event per new user at ``rate`` and time how long each takes to land.

    ``arrived`` is filled by the flow's sink (user -> perf_counter); with ``store``, a
    thread also polls ``read_user_states`` for the users still pending.
    """
    c0 = clock.now()
    time.sleep(2.0)
    idle = clock.cores(c0)

    n = max(2, int(rate * duration))
    users = [f"u{first_user + k}" for k in range(n)]
    rng = random.Random(seed)
    items = [f"i{rng.randrange(world.cfg.items)}" for _ in range(n)]
    watch(users)
    sent = [0.0] * n
    seen: dict[str, float] = {}
    pending: dict[str, None] = {}
    lock = threading.Lock()
    producing = threading.Event()
    producing.set()
    poller_cpu = [0.0]

    def poll() -> None:
        assert store is not None
        t0 = time.thread_time()
        while producing.is_set() or pending:
            with lock:
                ids = list(pending)
            if ids:
                got = store.read_user_states(ids)
                now = time.perf_counter()
                with lock:
                    for u, s in got.items():
                        if s.event_count >= 1:
                            seen[u] = now
                            pending.pop(u, None)
            time.sleep(0.002)
        poller_cpu[0] = time.thread_time() - t0

    poller = threading.Thread(target=poll, name="bench-poll", daemon=True)
    if store is not None:
        poller.start()
    # linger.ms=1 as the API's producer; the bulk settings would add up to 20 ms.
    producer = Producer(producer_config(settings.kafka.bootstrap_servers, **{"linger.ms": 1}))
    c1 = clock.now()
    start = time.perf_counter()
    last_sent = start
    try:
        for k in range(n):
            due = start + k / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.002))
            value = (
                f'{{"event_type":"view","user_id":"{users[k]}","item_id":"{items[k]}",'
                f'"timestamp":"{iso(time.time())}","session_id":"fresh-{k}"}}'
            ).encode()
            if store is not None and k % POLL_SAMPLE == 0:
                with lock:
                    pending[users[k]] = None
            sent[k] = time.perf_counter()
            producer.produce(settings.kafka.events_topic, value, users[k].encode())
            producer.poll(0)
        last_sent = time.perf_counter()
        producer.flush(10)
        deadline = time.monotonic() + 30
        while (pending or any(u not in arrived for u in users)) and time.monotonic() < deadline:
            runner.check()
            time.sleep(0.02)
    finally:
        producing.clear()
        with lock:
            pending.clear()  # already empty unless we gave up waiting
        if poller.is_alive():
            poller.join(5)
    elapsed = time.perf_counter() - start
    busy = clock.cores(c1)
    arrive = [arrived[u] - sent[k] for k, u in enumerate(users) if u in arrived]
    return Freshness(
        flow=flow,
        offered_rate=rate,
        achieved_rate=round((n - 1) / (last_sent - start), 1),
        events=n,
        arrived=len(arrive),
        arrive_ms=_pcts(arrive),
        poll_ms=(
            _pcts([seen[u] - sent[k] for k, u in enumerate(users) if u in seen]) if store else None
        ),
        poller_cpu_share=round(poller_cpu[0] / elapsed, 3) if store else None,
        idle_cores=(round(idle[0], 2), round(idle[1], 2)),
        busy_cores=(round(busy[0], 2), round(busy[1], 2)),
    )


# --- (d) freshness through the API -------------------------------------------------------


API_TOPIC = "bench.api-events"
API_SAMPLE = 100
"""Every 100th user is polled through GET /users/{id}, one request in flight at a time.
Each pending user waits for the GETs of all the others, so sampling more makes the poller
itself the delay (1 in 25 keeps ~100 users pending and puts the p50 near 0.5 s)."""


def api_server(settings: Settings, state_dir: Path, log: Path) -> ServeProcess:
    """``python -m infra.serve`` (API + in-process dataflow on the embedded store), as the
    product runs, on its own topic so that it starts caught up; no inherited RECSYS_*."""
    return ServeProcess(
        {
            "RECSYS_STATE_DIR": str(state_dir),
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "RECSYS_KAFKA_EVENTS_TOPIC": settings.kafka.events_topic,
            "RECSYS_KAFKA_DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
            "RECSYS_API_AUTO_PUBLISH_LATEST": "false",
        },
        log,
        host="127.0.0.1",
        unset=[k for k in os.environ if k.startswith("RECSYS_")],
        ready_timeout=120.0,
    )


class UserCounts:
    """``GET /users/{id}`` on one keep-alive connection: how many events a user has folded."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def event_count(self, user: str) -> int:
        try:
            self.conn.request("GET", f"/users/{user}")
            r = self.conn.getresponse()
            status, body = r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            raise
        return int(json.loads(body).get("event_count", 0)) if status == 200 else 0


def measure_api_freshness(
    base: Settings, world: World, tmp: Path, rate: float, duration: float, seed: int
) -> Freshness:
    """Produce one event per new user at ``rate``; a sample of them is polled through
    GET /users/{id} of a separate ``infra.serve`` process until it shows the event."""
    settings = base.with_values(events_topic=API_TOPIC, dead_letter_topic=f"{API_TOPIC}.dlq")
    ensure_app_topics(settings)
    state_dir = tmp / "api-state"
    init = base.with_values(state_dir=state_dir, qdrant={"path": None})
    store = FeatureStore.open(init)
    world.publish(store, VERSION, with_profiles=False)
    store.close()
    server = api_server(settings, state_dir, tmp / "api-serve.log").start()
    counts = UserCounts(server.port)
    poll_cpu = [0.0]
    try:
        server.wait_ready()
        producer = Producer(producer_config(settings.kafka.bootstrap_servers, **{"linger.ms": 1}))
        # warm up: the flow is consuming once a first event shows
        producer.produce(API_TOPIC, _fresh_event("warm-0", "i0", 0), b"warm-0")
        producer.flush(10)
        deadline = time.monotonic() + 60
        while counts.event_count("warm-0") < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the API's dataflow never folded the warm-up event")
            time.sleep(0.05)
        time.sleep(1.0)

        n = max(2, int(rate * duration))
        rng = random.Random(seed)
        users = [f"api{k}" for k in range(n)]
        items = [f"i{rng.randrange(world.cfg.items)}" for _ in range(n)]
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        pending: list[str] = []
        lock = threading.Lock()
        producing = threading.Event()
        producing.set()

        def poll() -> None:
            t0 = time.thread_time()
            while producing.is_set() or pending:
                with lock:
                    todo = list(pending)
                for u in todo:
                    if counts.event_count(u) >= 1:
                        now = time.perf_counter()
                        with lock:
                            seen[u] = now
                            pending.remove(u)
                if not todo:
                    time.sleep(0.0005)
            poll_cpu[0] = time.thread_time() - t0

        poller = threading.Thread(target=poll, name="bench-api-poll", daemon=True)
        poller.start()
        c0 = cpu_seconds(), time.perf_counter(), server.cpu_seconds()
        start = time.perf_counter()
        try:
            for k in range(n):
                due = start + k / rate
                while (now := time.perf_counter()) < due:
                    time.sleep(min(due - now, 0.002))
                u = users[k]
                t = time.perf_counter()
                if k % API_SAMPLE == 0:
                    with lock:
                        sent[u] = t
                        pending.append(u)
                producer.produce(API_TOPIC, _fresh_event(u, items[k], k), u.encode())
                producer.poll(0)
            last_sent = time.perf_counter()
            producer.flush(10)
            deadline = time.monotonic() + 30
            while pending and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            producing.clear()
            poller.join(35)
        elapsed = time.perf_counter() - c0[1]
        server_cores = (server.cpu_seconds() - c0[2]) / elapsed
        ms = _pcts([seen[u] - sent[u] for u in sent if u in seen])
        return Freshness(
            flow="api",
            offered_rate=rate,
            achieved_rate=round((n - 1) / (last_sent - start), 1),
            events=n,
            arrived=len(seen),
            arrive_ms=ms,
            poll_ms=ms,
            poller_cpu_share=round(poll_cpu[0] / elapsed, 3),
            idle_cores=(0.0, 0.0),
            busy_cores=(round(server_cores, 2), 0.0),
        )
    finally:
        counts.conn.close()
        server.stop()


def _fresh_event(user: str, item: str, k: int) -> bytes:
    return (
        f'{{"event_type":"view","user_id":"{user}","item_id":"{item}",'
        f'"timestamp":"{iso(time.time())}","session_id":"fresh-{k}"}}'
    ).encode()


def hold_users(
    settings: Settings, store: TimedStore, runner: FlowRunner, world: World, n: int, timeout: float
) -> None:
    """One event for each of ``n`` new users, folded before the timed load starts: the
    flow then holds them (the state TTL outlasts the run)."""
    users = [f"held{k}" for k in range(n)]
    rng = random.Random(n)
    store.watch(dict.fromkeys(users, 1))
    records = (
        (u.encode(), _fresh_event(u, f"i{rng.randrange(world.cfg.items)}", k))
        for k, u in enumerate(users)
    )
    t0 = time.perf_counter()
    produce(records, settings.kafka.bootstrap_servers, settings.kafka.events_topic, total=n)
    deadline = time.monotonic() + timeout
    while not store.all_reached.wait(0.25):
        runner.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"holding {n:,} users: {len(store.reached):,} folded")
    dt = time.perf_counter() - t0
    print(f"  the flow holds {n:,} users ({n / dt:,.0f} new users/s folded)", flush=True)


def measure_all_freshness(
    base: Settings, world: World, tmp: Path, args: Any, epoch: timedelta | None
) -> list[Freshness]:
    """Each freshness round on its own new dev broker, flow and topic.

    The dev broker keeps each partition as a list of record batches, and a fetch costs
    more the more batches precede it: a topic fed at 5k events/s with ``linger.ms`` 1
    (thousands of tiny batches) makes successive rounds on one broker slower and slower
    (ceiling p50 10 -> 112 -> 143 ms, broker 0.8 -> 1.3 cores). A Kafka broker finds an
    offset through its index; a fresh broker per round keeps that artefact out.
    """
    out: list[Freshness] = []
    kinds = ["ceiling", "product", "product+poll"] + (["api"] if args.api else [])
    for k, kind in enumerate(kinds):
        with DevBroker(free_port(), log_path=tmp / f"broker-fresh-{k}.log") as fb:
            b = base.with_values(bootstrap_servers=fb.bootstrap)
            ensure_app_topics(b)
            assert fb.proc is not None
            clock = CpuClock(fb.proc.pid)
            first_user = args.users + 10 * k * int(args.rate * args.duration)
            if kind == "api":
                out.append(
                    measure_api_freshness(b, world, tmp, args.rate, args.duration, args.seed + k)
                )
            elif kind == "ceiling":
                with ceiling_flow(b, 10**12, FlowOptions(epoch)) as (sink, runner):
                    out.append(
                        measure_freshness(
                            kind,
                            b,
                            runner,
                            world,
                            clock,
                            args.rate,
                            args.duration,
                            first_user,
                            args.seed + k,
                            sink.arrived,
                            sink.watching.update,
                        )
                    )
            else:
                popts = FlowOptions(epoch, 1, recovery=not args.no_recovery)
                with product_flow(b, world, {}, tmp / f"fresh-{k}", popts) as (store, runner):
                    if args.hold:
                        hold_users(b, store, runner, world, args.hold, args.timeout)
                    out.append(
                        measure_freshness(
                            "product",
                            b,
                            runner,
                            world,
                            clock,
                            args.rate,
                            args.duration,
                            first_user,
                            args.seed + k,
                            store.reached,
                            _watcher(store),
                            store if kind == "product+poll" else None,
                        )
                    )
    return out


# --- (e) another version, side by side ----------------------------------------------------


def run_against(args: Any, workers: int, out: Path) -> RunResult:
    """The product flow of the checkout ``args.against``, run by that checkout's own
    benchmark (its broker, its store) on the same synthetic events, one round, no
    freshness: its product run, named "against wN"."""
    cmd = [
        sys.executable,
        "-m",
        "bench.flow",
        *("--events", str(args.events), "--users", str(args.users), "--items", str(args.items)),
        *("--partitions", str(args.partitions), "--seed", str(args.seed), "--repeat", "1"),
        *("--duration", "0", "--no-api", "--workers", str(workers), "--json", str(out)),
        *("--timeout", str(args.timeout)),
    ]
    if args.epoch_s:
        cmd += ["--epoch-s", str(args.epoch_s)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env |= {"PYTHONPATH": str(args.against.resolve()), "RECSYS_CATALOG_WARM_ENCODER": "false"}
    done = subprocess.run(cmd, cwd=args.against, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"the benchmark of {args.against} failed: " + " | ".join(tail))
    runs = json.loads(out.read_text())["runs"]
    (run,) = [r for r in runs if r["kind"] == f"product w{workers}"]
    return RunResult(
        f"against w{workers}",
        run["events"],
        run["seconds"],
        run["first_output_s"],
        run["cpu_cores"],
        run["broker_cores"],
        run["store_write_s"],
        run["states_written"],
    )


# --- reporting ----------------------------------------------------------------------------


def print_table(results: list[RunResult]) -> dict[str, float]:
    print(
        f"\n{'run':<12}{'events':>9}{'seconds':>9}{'events/s':>10}{'1st out s':>10}"
        f"{'CPU':>6}{'broker':>7}{'store s':>9}{'states/ev':>10}"
    )
    for r in results:
        extra = (
            f"{r.store_write_s:>9.2f}{r.states_written / r.events:>10.2f}"
            if r.kind.startswith("product")
            else ""
        )
        print(
            f"{r.kind:<12}{r.events:>9}{r.seconds:>9.2f}"
            f"{r.per_s:>10.0f}{r.first_output_s:>10.2f}{r.cpu_cores:>6.2f}"
            f"{r.broker_cores:>7.2f}{extra}"
        )
    kinds = list(dict.fromkeys(r.kind for r in results))
    med = {k: statistics.median(r.per_s for r in results if r.kind == k) for k in kinds}
    sec = {k: statistics.median(r.seconds for r in results if r.kind == k) for k in kinds}
    for k in kinds:
        print(f"{'median':<12}{'':>9}{sec[k]:>9.2f}{med[k]:>10.0f}   {k}")
    summary: dict[str, float] = {}
    for k in kinds:
        summary[k.replace(" ", "_") + "_per_s"] = round(med[k])
        if k.startswith("against"):
            w = k.split()[1]
            ratio = med[f"product {w}"] / med[k]
            print(f"product {w}/against {w} (median events/s): {ratio:.2f}x")
            summary[f"ratio_{w}_vs_against"] = round(ratio, 3)
        if not k.startswith("product"):
            continue
        w = k.split()[1]
        ratio = med[k] / med[f"ceiling {w}"]
        ratio1 = med[k] / med["ceiling w1"]
        share = statistics.median(r.store_write_s / r.seconds for r in results if r.kind == k)
        print(
            f"{k}/ceiling {w} (median events/s): {ratio:.3f}; vs ceiling w1: {ratio1:.3f}; "
            f"{share:.0%} of the run inside store writes"
        )
        summary[f"ratio_{w}"] = round(ratio, 4)
        summary[f"ratio_{w}_vs_ceiling_w1"] = round(ratio1, 4)
        summary[f"store_write_share_{w}"] = round(share, 3)
    return summary


def print_freshness(f: Freshness) -> None:
    if f.flow == "api":
        a = f.arrive_ms
        print(
            f"\nfreshness through the API (infra.serve: API + in-process dataflow): {f.events:,} "
            f"events for new users, offered {f.offered_rate:,.0f}/s, sent "
            f"{f.achieved_rate:,.0f}/s; 1 in {API_SAMPLE} polled, {f.arrived:,} seen"
        )
        print(
            f"  produce -> {'GET /users/{id} shows it:':<34} p50 {a['p50']:>7} ms  "
            f"p99 {a['p99']:>7} ms  max {a['max']:>7} ms"
        )
        print(
            f"  server CPU {f.busy_cores[0]:.2f} cores; polling thread "
            f"{f.poller_cpu_share:.0%} of a core"
        )
        return
    how = " (with the polling reader)" if f.poll_ms is not None else ""
    print(
        f"\nfreshness, {f.flow} flow{how}: {f.events:,} events for distinct new users, offered "
        f"{f.offered_rate:,.0f}/s, sent {f.achieved_rate:,.0f}/s; {f.arrived:,} arrived"
    )
    what = "reached the counting sink" if f.flow == "ceiling" else "sink's store write returned"
    a = f.arrive_ms
    print(
        f"  produce -> {what + ':':<34} p50 {a['p50']:>7} ms  p99 {a['p99']:>7} ms  "
        f"max {a['max']:>7} ms"
    )
    if f.poll_ms is not None:
        p = f.poll_ms
        print(
            f"  produce -> {'visible via read_user_states:':<34} p50 {p['p50']:>7} ms  "
            f"p99 {p['p99']:>7} ms  max {p['max']:>7} ms"
        )
        print(f"  polling thread CPU: {f.poller_cpu_share:.0%} of a core")
    print(
        f"  CPU cores, this process / broker: {f.idle_cores[0]:.2f} / {f.idle_cores[1]:.2f} idle "
        f"(caught up), {f.busy_cores[0]:.2f} / {f.busy_cores[1]:.2f} under this load"
    )


def print_state_sizes(
    items: int = 100_000, seen_counts: Sequence[int] = (0, 100, 1000, 5000)
) -> None:
    """Bytes per user of the store payload and the recovery snapshot by how many items the
    state remembers as seen (``fold.seen_cap``, 5,000 by default), beside 20 recent items,
    a 64-d vector and 5 categories; and the time to encode each."""
    rng = np.random.default_rng(0)
    print(f"user state by items remembered as seen (rows of a {items:,}-item catalogue):")
    print(
        f"  {'seen':>6} {'payload B':>10} {'snapshot B':>11} {'rows in memory B':>17} "
        f"{'to_payload us':>14} {'to_snapshot us':>15}"
    )
    for n in seen_counts:
        s = UserState(
            "u12345",
            rng.normal(size=64).astype(np.float32),
            3.5,
            1.7e9,
            {f"c{k}": 1.0 / (k + 1) for k in range(5)},
            [RecentItem(f"item{k}", 1.7e9 - k, "view") for k in range(20)],
            "u12345@1700000000",
            1.7e9 - 600,
            20,
            20 + n,
            0,
            VERSION,
            {0: 123456, 1: 654321},
            "topic-id",
            array("i", rng.choice(items, n, replace=False).astype(np.int32).tobytes()),
        )
        payload = s.to_payload()
        size = sum(len(str(v)) for v in payload.values())
        timing = {}
        for name, fn in (("payload", s.to_payload), ("snapshot", s.to_snapshot)):
            reps = 2000
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            timing[name] = (time.perf_counter() - t0) / reps * 1e6
        print(
            f"  {n:>6,} {size:>10,} {len(s.to_snapshot()):>11,} "
            f"{s.seen_rows.buffer_info()[1] * s.seen_rows.itemsize:>17,} "
            f"{timing['payload']:>14.1f} {timing['snapshot']:>15.1f}"
        )


def print_profile(profile: cProfile.Profile, path: Path | None, top: int = 25) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    text = out.getvalue()
    if path is not None:
        path.write_text(text)
        stats.dump_stats(str(path.with_suffix(".pstats")))
        print(f"profile of the product flow's thread written to {path} (+ .pstats)")
    print("\n".join(text.splitlines()[: top + 12]))


# --- main ------------------------------------------------------------------------------


def _interrupt(*_: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop the flows and the broker."""
    raise KeyboardInterrupt


app = typer.Typer(add_completion=False)


@app.command(
    help=__doc__.split("\n\n")[0], epilog="Example: recsys bench flow --events 200000 --workers 1"
)
def cli(
    events: Annotated[int, typer.Option(min=1, help="Events produced to the topic.")] = 1_000_000,
    users: Annotated[int, typer.Option(min=1, help="Users of the synthetic world.")] = 20_000,
    items: Annotated[int, typer.Option(min=1, help="Items of the synthetic world.")] = 2_000,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of the topic.")] = 4,
    repeat: Annotated[int, typer.Option(min=1, help="Rounds of ceiling/product runs.")] = 2,
    rate: Annotated[float, typer.Option(min=0.001, help="Freshness: offered events/s.")] = 5_000.0,
    duration: Annotated[
        float, typer.Option(min=0.0, help="Freshness: seconds of load (0: skip).")
    ] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic world.")] = 0,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds per run.")] = 600.0,
    epoch_s: Annotated[
        float | None,
        typer.Option(
            help="Experiment: Bytewax epoch interval [default: RECSYS_RECOVERY_EPOCH_SECONDS]",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile", help="After the measured runs, profile one product run (cProfile; slower)."
        ),
    ] = False,
    profile_out: Annotated[Path, typer.Option(help="Where --profile writes.")] = Path(
        "bench-dataflow.prof.txt"
    ),
    workers: Annotated[
        str, typer.Option(help="Worker counts to measure (one process), comma-separated.")
    ] = "1,2",
    api: Annotated[
        bool,
        typer.Option(
            "--api/--no-api",
            help="The freshness run through GET /users/{id} of infra.serve.",
        ),
    ] = True,
    no_recovery: Annotated[
        bool,
        typer.Option("--no-recovery", help="Experiment: product without Bytewax recovery."),
    ] = False,
    json: Annotated[Path | None, typer.Option(help="Also write the results here.")] = None,
    state_sizes: Annotated[
        bool,
        typer.Option("--state-sizes", help="Only print the user state's sizes by seen items."),
    ] = False,
    against: Annotated[
        Path | None,
        typer.Option(
            help="A checkout of another version (git worktree): each round also runs its "
            "product flow, by its own `python -m bench.flow`, on the same events, and the "
            "medians are compared.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    hold: Annotated[
        int,
        typer.Option(
            min=0,
            help="Freshness: users the product flow folds and holds before the timed load.",
        ),
    ] = 0,
) -> None:
    options = locals()
    options["profile"] = profile_out if profile else None
    raise typer.Exit(main(SimpleNamespace(**options)))


def main(args: Any) -> int:
    """The benchmark as ``args`` (the fields of ``cli``'s options) says."""
    print_state_sizes()
    if args.state_sizes:
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    epoch = timedelta(seconds=args.epoch_s) if args.epoch_s else None
    worker_counts = [int(w) for w in args.workers.split(",")]
    opts = FlowOptions(epoch)

    tmp = Path(tempfile.mkdtemp(prefix="bench-dataflow-"))
    broker = DevBroker(free_port(), log_path=tmp / "broker.log")
    try:
        broker.start()
        values: dict[str, Any] = nested(
            dict(
                bootstrap_servers=broker.bootstrap,
                events_topic=TOPIC,
                dead_letter_topic=f"{TOPIC}.dlq",
                topic_partitions=args.partitions,
                state_dir=tmp,
                url=None,
                start_offset="earliest",
                # No catalogue writes here: the text encoder's one-off load at start
                # (~20 s of imports holding the GIL on this machine) stays out of the runs.
                warm_encoder=False,
            )
        )
        base = Settings(**values)
        ensure_app_topics(base)
        assert broker.proc is not None
        clock = CpuClock(broker.proc.pid)
        world = World(WorldConfig(users=args.users, items=args.items, seed=args.seed))
        events: Events = world.events(args.events)
        n = len(events)
        expected = {f"u{u}": int(c) for u, c in enumerate(events.per_user(args.users)) if c}
        t0 = time.perf_counter()
        produce(events.records(), broker.bootstrap, TOPIC, total=n)
        dt = time.perf_counter() - t0
        print(
            f"dev broker {broker.bootstrap}; produced {n:,} events for {len(expected):,} users "
            f"over {world.cfg.items:,} items to {args.partitions} partitions in {dt:.2f}s "
            f"({n / dt:,.0f} msg/s, JSON encoding included)"
        )
        if opts.epoch:
            print(f"experiment: epoch {opts.epoch}")

        results: list[RunResult] = []
        fresh: list[Freshness] = []
        n_fresh = max(2, int(args.rate * args.duration)) if args.duration > 0 else 0
        for i in range(args.repeat):
            for w in worker_counts:
                copts = FlowOptions(epoch, w)
                popts = FlowOptions(epoch, w, recovery=not args.no_recovery)
                start = clock.now()
                with ceiling_flow(base, n, copts) as (sink, runner):
                    results.append(wait_ceiling(sink, runner, args.timeout, clock, start))
                start = clock.now()
                store_dir = tmp / f"store-{i}-{w}"
                with product_flow(base, world, expected, store_dir, popts) as (store, runner):
                    res = wait_product(
                        store, runner, n, args.timeout, f"product w{w}", clock, start
                    )
                    results.append(res)
                    wrong = verify_counts(store, expected)
                    if wrong:
                        raise RuntimeError(f"{wrong} users' event_count in the store is wrong")
                    print(
                        f"  #{i + 1} w{w}: ceiling {results[-2].per_s:,.0f} ev/s, product "
                        f"{res.per_s:,.0f} ev/s; all {len(expected):,} users' counts verified "
                        "in the store",
                        flush=True,
                    )
                    assert res.memory is not None
                    print_memory(res.memory)
                if args.against is not None:
                    results.append(run_against(args, w, tmp / f"against-{i}-{w}.json"))
                    print(f"  #{i + 1} w{w}: against {results[-1].per_s:,.0f} ev/s", flush=True)
        if n_fresh:
            fresh = measure_all_freshness(base, world, tmp, args, epoch)
        summary = print_table(results)
        for f in fresh:
            print_freshness(f)

        if args.profile:
            prof = cProfile.Profile()
            start = clock.now()
            prof_dir = tmp / "store-prof"
            popts = FlowOptions(epoch, 1, recovery=not args.no_recovery)
            with product_flow(base, world, expected, prof_dir, popts, prof) as (store, runner):
                res = wait_product(store, runner, n, args.timeout, "profiled", clock, start)
            print(
                f"\nprofiled product run (not in the medians): {res.per_s:,.0f} ev/s under cProfile"
            )
            print_profile(prof, args.profile)

        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "date": time.strftime("%Y-%m-%d"),
                        "events": n,
                        "users": len(expected),
                        "items": world.cfg.items,
                        "partitions": args.partitions,
                        "epoch_s": args.epoch_s,
                        "summary": summary,
                        "runs": [asdict(r) | {"per_s": r.per_s} for r in results],
                        "freshness": [asdict(f) for f in fresh],
                    },
                    indent=2,
                )
            )
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    app(prog_name="python -m bench.flow")
