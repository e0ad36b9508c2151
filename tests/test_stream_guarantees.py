"""Production guarantees of the dataflow, against the real broker and the real store:
exactly-once state across SIGKILLs (Bytewax recovery), idempotent store writes under
replay, bounded in-flow state (TTL), and the same user states from 1 worker, 2 workers
and a 2-process cluster."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from core.events import ValidEvent
from core.fold import FoldParams, fold_event
from core.settings import Settings
from core.state import UserState
from dataflow.runner import DataflowThread
from eventlog.producer import PRODUCER_CONFIG
from featurestore import FeatureStore
from infra.broker import free_port
from tests.helpers import isolated_settings, publish, wait_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
ITEMS = 40
KINDS = ("view", "view", "view", "click", "add_to_cart", "purchase")


def stream(n: int, users: int, seed: int = 0, unknown_every: int = 0) -> list[dict]:
    """Events in time order; some carry a session id, some name an unknown item."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        item = f"i{rng.randrange(ITEMS)}"
        if unknown_every and k % unknown_every == 0:
            item = f"gone-{k}"
        e = {
            "event_type": rng.choice(KINDS),
            "user_id": f"x{rng.randrange(users)}",
            "item_id": item,
            "timestamp": T0 + k * 7.0 + rng.random(),
        }
        if rng.random() < 0.3:
            e["session_id"] = f"s{k // 50}"
        out.append(e)
    return out


def produce(
    settings: Settings, events: list[dict], rate: float | None = None, key: str = "user_id"
) -> None:
    """``events`` to the events topic keyed by user (``key="item_id"``: item writes to the
    items topic keyed by item), at ``rate`` per second if given."""
    topic = settings.kafka.events_topic if key == "user_id" else settings.kafka.items_topic
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, **PRODUCER_CONFIG})
    start = time.perf_counter()
    for k, e in enumerate(events):
        if rate is not None:
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        p.produce(topic, key=e[key].encode(), value=json.dumps(e).encode())
        p.poll(0)
    assert p.flush(10) == 0


def reference(settings: Settings, store: FeatureStore, events: list[dict]) -> dict[str, UserState]:
    """What an uninterrupted run computes: the pure fold of each user's events in order."""
    catalog = store.load_catalog("v1")
    params = FoldParams.from_settings(settings)
    states: dict[str, UserState] = {}
    for e in events:
        s = states.setdefault(e["user_id"], UserState(e["user_id"], model_version="v1"))
        ev = ValidEvent(
            e["event_type"], e["user_id"], e["item_id"], e["timestamp"], e.get("session_id")
        )
        row = catalog.index.get(ev.item_id)
        fold_event(
            s, ev, catalog.vector(ev.item_id), catalog.categories(ev.item_id), params, row=row
        )
    return states


def assert_same_states(got: dict[str, UserState], want: dict[str, UserState]) -> None:
    assert set(got) == set(want)
    for u, w in want.items():
        g = got[u]
        assert g.event_count == w.event_count, u
        assert g.unknown_items == w.unknown_items, u
        np.testing.assert_allclose(g.vector, w.vector, rtol=1e-4, atol=1e-5, err_msg=u)
        assert g.mass == pytest.approx(w.mass, rel=1e-6), u
        assert g.categories == pytest.approx(w.categories, rel=1e-6), u
        assert [(r.item_id, r.ts) for r in g.recent] == [(r.item_id, r.ts) for r in w.recent], u
        # every item seen, once, in the order folded: a replay would move or repeat rows
        assert list(g.seen_rows) == list(w.seen_rows), u
        assert (g.session_id, g.session_events) == (w.session_id, w.session_events), u
        assert g.last_ts == w.last_ts, u


def proc_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "RECSYS_STATE_DIR": str(settings.state_dir),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECSYS_KAFKA_EVENTS_TOPIC": settings.kafka.events_topic,
        "RECSYS_KAFKA_ITEMS_TOPIC": settings.kafka.items_topic,
        "RECSYS_KAFKA_DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
        "RECSYS_RECOVERY_EPOCH_SECONDS": str(settings.recovery.epoch_seconds),
        "RECSYS_DATAFLOW_STATE_TTL_SECONDS": str(settings.dataflow.state_ttl_seconds),
        "RECSYS_RECOVERY_PRUNE_SECONDS": str(settings.recovery.prune_seconds),
        **extra,
    }


def start_flow(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dataflow.run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_loaded(proc: subprocess.Popen[bytes]) -> None:
    """Until the flow has its model (it logs "model ... loaded"), then it is consuming."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not any("loaded" in line for line in lines):
        line = proc.stdout.readline().decode()
        assert line, f"dataflow exited early: {''.join(lines)}"
        lines.append(line)
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained


def read_all(settings: Settings, users: list[str]) -> dict[str, UserState]:
    store = FeatureStore.open(settings)
    try:
        return store.read_user_states(users)
    finally:
        store.close()


@pytest.mark.parametrize("ttl", [3600.0, 0.2], ids=["held", "expiring-and-pruned"])
def test_sigkilled_flow_resumes_exactly_once(broker, make_settings, ttl):
    """Kill -9 the dataflow process three times mid-stream; after the last restart every
    user's state equals an uninterrupted fold: no event lost, none counted twice. Also
    when users keep expiring and their recovery markers are pruned meanwhile."""
    settings = make_settings(broker, epoch_seconds=0.3, state_ttl_seconds=ttl, prune_seconds=0.3)
    store = FeatureStore.open(settings)
    publish(store, n=ITEMS, dim=8)
    events = stream(3000, users=60, seed=1, unknown_every=97)
    want = reference(settings, store, events)
    store.close()

    producer = threading.Thread(target=produce, args=(settings, events, 400.0))
    producer.start()
    env = proc_env(settings)
    rng = random.Random(7)
    kills = 0
    try:
        while kills < 3:
            proc = start_flow(env)
            wait_loaded(proc)
            time.sleep(rng.uniform(0.5, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        producer.join(30)
        assert kills == 3 and not producer.is_alive()
        final = start_flow(env | {"RECSYS_DATAFLOW_EXIT_AT_END": "true"})
        out = final.communicate(timeout=60)[0].decode()
        assert final.returncode == 0, out
    finally:
        producer.join(30)
    assert_same_states(read_all(settings, list(want)), want)
    # Each restart resumed from a later committed epoch: recovery, not a re-read, did it.
    db = sqlite3.connect(Path(settings.recovery.dir) / "part-0.sqlite3")
    resumes = [r for (r,) in db.execute("SELECT resume_epoch FROM exs ORDER BY ex_num")]
    db.close()
    assert len(resumes) >= 2 and resumes == sorted(resumes) and resumes[-1] > 1


def test_store_writes_are_idempotent_under_replay(broker, make_settings):
    """Without recovery a restart re-reads the topic from the start: the replayed events are
    skipped by the per-partition offsets kept in each stored state, so the stored states
    are unchanged, byte for byte, and only new events count."""
    settings = make_settings(broker, recovery={"enabled": False}, exit_at_end=True)
    store = FeatureStore.open(settings)
    publish(store, n=ITEMS, dim=8)
    events = stream(400, users=10, seed=2)
    produce(settings, events)
    try:
        users = sorted({e["user_id"] for e in events})
        duplicates = REGISTRY.get_sample_value("recsys_events_duplicate_total") or 0.0
        for _ in range(2):
            flow = DataflowThread(settings, store, store.catalog_provider()).start()
            assert flow.join(30)  # exit_at_end: the flow ends at the end of the topic
            got = store.read_user_states(users)
            assert_same_states(got, reference(settings, store, events))
        after = REGISTRY.get_sample_value("recsys_events_duplicate_total") or 0.0
        assert after - duplicates == len(events)  # the second run skipped every event
    finally:
        store.close()


def user_state_points_written() -> float:
    return (
        REGISTRY.get_sample_value("recsys_store_batch_points_sum", {"collection": "user_state"})
        or 0.0
    )


def test_a_flow_behind_writes_each_users_burst_once_per_batch(broker, tmp_path):
    """A backlog is read in micro-batches of up to ``kafka.poll_batch`` events a partition,
    and each user's events in a batch become one store write, with the same states as one
    event at a time; a batch of one event is one write per event."""
    events = stream(600, users=10, seed=4)
    users = sorted({e["user_id"] for e in events})
    written = {}
    for poll_batch in (1, 5000):
        settings = isolated_settings(
            tmp_path / str(poll_batch), broker, exit_at_end=True, poll_batch=poll_batch
        )
        produce(settings, events)
        before = user_state_points_written()
        run_to_end(settings)
        written[poll_batch] = user_state_points_written() - before
        store = FeatureStore.open(settings)
        try:
            assert_same_states(store.read_user_states(users), reference(settings, store, events))
        finally:
            store.close()
    assert written[1] >= len(events) / 2
    assert written[5000] <= len(events) / 10


def test_idle_users_leave_memory_and_resume_from_the_store(broker, make_settings):
    """A long stream of one-time users does not grow the flow's state, in memory or in the
    recovery partitions: each expires after the TTL, its features stay in the store, and a
    returning user continues from them, also after a restart."""
    settings = make_settings(broker, state_ttl_seconds=0.3, epoch_seconds=0.2, prune_seconds=0.3)
    store = FeatureStore.open(settings)
    publish(store, n=ITEMS, dim=8)
    flow = DataflowThread(settings, store, store.catalog_provider()).start()

    def live() -> float:
        return REGISTRY.get_sample_value("recsys_state_keys", {"step": "user"}) or 0.0

    try:
        wait_for(flow.running.is_set)
        base = live()
        peak = 0.0
        for wave in range(8):  # 8 waves of 200 new users, each seen once
            events = [
                {"event_type": "view", "user_id": f"once{wave}-{k}", "item_id": f"i{k % ITEMS}"}
                | {"timestamp": T0 + wave}
                for k in range(200)
            ]
            produce(settings, events)
            last = f"once{wave}-199"
            wait_for(lambda u=last: store.read_user_state(u), timeout=10)
            peak = max(peak, live() - base)
            time.sleep(0.5)
        wait_for(lambda: live() - base == 0, timeout=5)  # all expired
        assert peak <= 3 * 200  # a few waves alive at once at most, not all 1,600
        # Bytewax's deletion markers of the 1,600 expired users leave the partitions too
        [print("ROWS", snapshot_rows(settings)) or time.sleep(0.5) for _ in range(2)]
        wait_for(lambda: snapshot_rows(settings) < 200, timeout=10)
        # consumer lag is exported per partition (librdkafka statistics, every second)
        lag = {"topic": settings.kafka.events_topic, "partition": "0"}
        assert REGISTRY.get_sample_value("recsys_consumer_lag_messages", lag) is not None

        # a returning user resumes from the stored features, after a restart that resumed
        # from the pruned partitions
        flow.stop()
        flow = DataflowThread(settings, store, store.catalog_provider()).start()
        wait_for(flow.running.is_set)
        produce(settings, [{"event_type": "click", "user_id": "once0-3", "item_id": "i9"}])
        s = wait_for(lambda: (s := store.read_user_state("once0-3")) and s.event_count == 2 and s)
        assert [r.item_id for r in s.recent] == ["i3", "i9"]
    finally:
        flow.stop()
        store.close()


def snapshot_rows(settings: Settings) -> int:
    """Rows in the recovery partitions' snapshot tables (every step, markers included).

    Read by another process: this one hosts the flow, whose SQLite is not Python's.
    """
    cmd = [sys.executable, "-m", "dataflow.prune", str(settings.recovery.dir), "--count"]
    return int(subprocess.run(cmd, capture_output=True, check=True, text=True).stdout)


def run_to_end(settings: Settings, workers: int = 1) -> None:
    store = FeatureStore.open(settings)
    try:
        if store.active_version() is None:
            publish(store, n=ITEMS, dim=8)
        flow = DataflowThread(settings, store, store.catalog_provider(), workers=workers)
        assert flow.start().join(60)
    finally:
        store.close()


def test_two_workers_and_a_two_process_cluster_match_one_worker(broker, make_settings, tmp_path):
    one = make_settings(broker, exit_at_end=True)
    events = stream(1500, users=40, seed=3, unknown_every=50)
    produce(one, events)
    users = sorted({e["user_id"] for e in events})
    run_to_end(one)
    want = read_all(one, users)

    def same_topic(name: str, **kw) -> Settings:
        return isolated_settings(
            tmp_path / name,
            None,
            bootstrap_servers=one.kafka.bootstrap_servers,
            events_topic=one.kafka.events_topic,
            dead_letter_topic=one.kafka.dead_letter_topic,
            exit_at_end=True,
            **kw,
        )

    two = same_topic("two-workers")
    run_to_end(two, workers=2)
    assert_same_states(read_all(two, users), want)

    # Two processes, one worker each. Each process keeps the users routed to its worker
    # and, on the embedded store, writes them to its own store directory (production
    # shares one Qdrant server); together they must hold every user exactly once.
    procs_settings = [same_topic(f"proc{i}", recovery={"enabled": False}) for i in range(2)]
    for s in procs_settings:
        store = FeatureStore.open(s)
        publish(store, n=ITEMS, dim=8)
        store.close()
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [
        start_flow(
            proc_env(s, RECSYS_DATAFLOW_EXIT_AT_END="true", RECSYS_RECOVERY_ENABLED="false"),
            "-i",
            str(i),
            "-a",
            addresses,
        )
        for i, s in enumerate(procs_settings)
    ]
    outs = [p.communicate(timeout=90)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    parts = [read_all(s, users) for s in procs_settings]
    assert not set(parts[0]) & set(parts[1]), "a user was folded in both processes"
    assert_same_states(parts[0] | parts[1], want)


def test_recovery_is_on_by_default_and_initialised(make_settings):
    from dataflow.recovery import recovery_config

    settings = make_settings()
    assert settings.recovery.enabled and settings.recovery.dir == settings.state_dir / "recovery"
    config = recovery_config(settings)
    assert config is not None
    assert sorted(p.name for p in Path(settings.recovery.dir).glob("part-*.sqlite3")) == [
        "part-0.sqlite3"
    ]
    assert recovery_config(settings) is not None  # a second start reuses them


def test_model_switch_moves_every_held_user_without_new_events(broker, make_settings):
    """Publishing a new version moves every user the flow holds to the new item space,
    with no event from them: none stays on the old version."""
    settings = make_settings(broker, model_migrate_seconds=0.3)
    store = FeatureStore.open(settings)
    publish(store, "v1", n=ITEMS, dim=8)
    flow = DataflowThread(settings, store, store.catalog_provider()).start()
    try:
        wait_for(flow.running.is_set)
        events = stream(300, users=25, seed=4)
        produce(settings, events)
        users = sorted({e["user_id"] for e in events})
        wait_for(lambda: sum(s.event_count for s in store.read_user_states(users).values()) == 300)
        _, _, v2, _ = publish(store, "v2", n=ITEMS, dim=8, seed=5)
        states = wait_for(
            lambda: (
                (got := store.read_user_states(users))
                and all(s.model_version == "v2" for s in got.values())
                and got
            ),
            timeout=10,
        )
        params = FoldParams.from_settings(settings)
        for s in states.values():  # rebuilt from the recent items, in v2's space
            expected = sum(
                params.weights[r.event_type]
                * 2.0 ** (-(s.last_ts - r.ts) / params.half_life)
                * v2[int(r.item_id[1:])]
                for r in s.recent
            )
            np.testing.assert_allclose(s.vector, expected, rtol=1e-4, atol=1e-5)
            assert s.event_count == sum(e["user_id"] == s.user_id for e in events)
    finally:
        flow.stop()
        store.close()


def item_writes(n: int) -> list[dict]:
    """New items, each later made unavailable if its number is a multiple of 5."""
    out: list[dict] = []
    for k in range(n):
        cat = "Sci-Fi" if k % 2 else "Drama"
        out.append(
            {"op": "upsert", "item_id": f"new-{k}", "title": f"New {k}", "categories": [cat]}
        )
        if k % 5 == 4:
            out.append({"op": "patch", "item_id": f"new-{k - 4}", "available": False})
    return out


def test_sigkilled_flow_applies_every_catalogue_write_once(broker, make_settings):
    """Kill -9 the dataflow twice while item writes arrive: at the end every item is in the
    catalogue once, at its own row, with its last write applied."""
    settings = make_settings(broker, epoch_seconds=0.3)
    store = FeatureStore.open(settings)
    publish(store, n=ITEMS, dim=8)
    store.close()
    n = 200
    writes = item_writes(n)
    producer = threading.Thread(target=produce, args=(settings, writes, 60.0, "item_id"))
    producer.start()
    env = proc_env(settings)
    try:
        for _ in range(2):
            proc = start_flow(env)
            wait_loaded(proc)
            time.sleep(random.Random(3).uniform(1.0, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        producer.join(30)
        final = start_flow(env | {"RECSYS_DATAFLOW_EXIT_AT_END": "true"})
        out = final.communicate(timeout=120)[0].decode()
        assert final.returncode == 0, out
    finally:
        producer.join(30)
    store = FeatureStore.open(settings)
    try:
        entries = store.runtime.all()
        catalog = store.load_catalog("v1")
    finally:
        store.close()
    assert sorted(e.slot for e in entries) == list(range(n))  # each item once, no gaps
    assert len(catalog.items) == ITEMS + n
    for k in range(n):
        row = catalog.index[f"new-{k}"]
        assert catalog.items[row].title == f"New {k}"
        patched = k % 5 == 0 and k + 4 < n
        assert catalog.available[row] == (not patched), k
