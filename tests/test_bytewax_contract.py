"""What the dataflow relies on in Bytewax beyond its public API: the tables of its
recovery partitions, which ``dataflow.prune`` reads and edits. A Bytewax upgrade that
changes them fails here, with the reason, before a flow runs without pruning."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflow.prune import schema_mismatch


class _DiscardA(StatefulBatchLogic[str, str, bytes]):
    """Holds each key; discards key "a" at its first batch (as an expired user is)."""

    def on_batch(self, values: list[str]) -> tuple[list[str], bool]:
        return values, values[0] == "a"

    def snapshot(self) -> bytes:
        return b"held"


def prune_cli(db_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A process of its own, as the flow runs it: Bytewax's SQLite and Python's must not
    # share one (dataflow/prune.py).
    cmd = [sys.executable, "-m", "dataflow.prune", str(db_dir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_recovery_partitions_have_the_tables_and_markers_prune_reads(tmp_path: Path):
    init_db_dir(tmp_path, 1)
    flow = Dataflow("contract")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(["a", "b", "b"])), str)
    out: list = []
    held = op.stateful_batch("hold", keyed, lambda _resume: _DiscardA())
    op.output("out", held, TestingSink(out))
    run_main(flow, epoch_interval=timedelta(seconds=10), recovery_config=RecoveryConfig(tmp_path))

    markers = prune_cli(tmp_path, "--markers")
    assert markers.returncode == 0, markers.stderr
    assert markers.stdout.strip() == "1", "a discarded key is no longer a row with ser_change NULL"


def test_a_changed_schema_stops_the_pruner_with_the_reason(tmp_path: Path):
    con = sqlite3.connect(tmp_path / "part-0.sqlite3")
    con.execute("CREATE TABLE snaps (step_id TEXT, state_key TEXT, snap_epoch INTEGER)")
    con.execute("CREATE TABLE commits (commit_epoch INTEGER)")
    con.commit()
    con.close()
    reason = schema_mismatch(tmp_path)
    assert reason is not None and "ser_change" in reason and "must be adapted" in reason
    ran = prune_cli(tmp_path, "--every", "0.1")
    assert ran.returncode == 2 and "ser_change" in ran.stderr
