"""`recsys dataflow -i/-a` as the deployment files run it: a 2-process Bytewax cluster,
each process with its own state and recovery volume, stopped and resumed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from core.settings import Settings
from featurestore import FeatureStore
from infra.broker import free_port
from tests.helpers import isolated_settings, publish
from tests.test_stream_guarantees import (
    ITEMS,
    assert_same_states,
    proc_env,
    produce,
    read_all,
    reference,
    stream,
)

pytestmark = pytest.mark.integration


def run_cluster(procs: list[Settings], addresses: str) -> None:
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "dataflow", "-i", str(i), "-a", addresses],
            env=proc_env(s, RECSYS_DATAFLOW_EXIT_AT_END="true", RECSYS_RECOVERY_PARTITIONS="2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i, s in enumerate(procs)
    ]
    outs = [p.communicate(timeout=120)[0].decode() for p in running]
    assert [p.returncode for p in running] == [0, 0], outs


def test_two_processes_with_own_recovery_volumes_resume_together(broker, make_settings, tmp_path):
    one = make_settings(broker, exit_at_end=True)
    first, second = stream(900, users=30, seed=5)[:600], stream(900, users=30, seed=5)[600:]
    produce(one, first)

    procs = [
        isolated_settings(
            tmp_path / f"flow-{i}",
            None,
            bootstrap_servers=one.kafka.bootstrap_servers,
            events_topic=one.kafka.events_topic,
            dead_letter_topic=one.kafka.dead_letter_topic,
        )
        for i in range(2)
    ]
    for s in procs:
        store = FeatureStore.open(s)
        publish(store, n=ITEMS, dim=8)
        store.close()
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    run_cluster(procs, addresses)

    # each volume holds only its own partition of the cluster's recovery
    for i, s in enumerate(procs):
        assert s.recovery.dir is not None
        assert sorted(p.name for p in s.recovery.dir.glob("part-*.sqlite3")) == [
            f"part-{i}.sqlite3"
        ]

    produce(one, second)
    run_cluster(procs, addresses)  # a restart: resumes from the snapshots, reads the rest
    runs = []  # Bytewax routes each execution's record to one partition of the cluster
    for i, s in enumerate(procs):
        assert s.recovery.dir is not None
        with sqlite3.connect(s.recovery.dir / f"part-{i}.sqlite3") as part:
            runs += list(part.execute("SELECT ex_num, worker_count, resume_epoch FROM exs"))
    # the restart is execution 1 of the same dataflow, resumed past the first run's epochs
    # (a fresh start resumes at epoch 1), found through both volumes' partitions
    ex_num, workers, resume_epoch = max(runs)
    assert (ex_num, workers) == (1, 2) and resume_epoch > 1

    users = sorted({e["user_id"] for e in first + second})
    parts = [read_all(s, users) for s in procs]
    assert not set(parts[0]) & set(parts[1]), "a user was folded in both processes"
    store = FeatureStore.open(procs[0])
    try:
        want = reference(one, store, first + second)
    finally:
        store.close()
    assert_same_states(parts[0] | parts[1], want)


def test_a_standalone_dataflow_serves_its_metrics(broker, make_settings):
    import signal
    import time

    import httpx

    settings = make_settings(broker)
    store = FeatureStore.open(settings)
    publish(store, n=ITEMS, dim=8)
    store.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "dataflow", "--metrics-port", str(port)],
        env=proc_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        produce(settings, stream(20, users=4, seed=1))

        def folded() -> float:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                return 0.0
            lines = [ln for ln in text.splitlines() if ln.startswith("recsys_events_folded_total")]
            return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)

        deadline = time.monotonic() + 60
        while folded() < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert folded() == 20
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert (
            f'recsys_consumer_lag_messages{{partition="0",topic="{settings.kafka.events_topic}"}}'
            in text
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
