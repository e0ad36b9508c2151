"""Remove the markers Bytewax leaves for discarded keys from its recovery partitions.

Bytewax marks a key its logic discards (a shard whose users all expired,
``dataflow.shards``) with a deletion snapshot and never removes it; every epoch close then
groups the whole snapshot table by key (~0.75 µs a row; docs/benchmarks.md). With a
key per shard these markers number a few dozen at most; this keeps the table to the
keys the flow holds all the same, and it holds for any step keyed by a growing set.

Runs as a process of its own, ``python -m dataflow.prune DIR --every SECONDS``, which
``dataflow.recovery.RecoveryPruner`` starts beside the flow: Bytewax links its own copy
of SQLite, and two SQLite libraries in one process break each other's POSIX locks and
see stale pages (measured here: an in-process reader saw no commit past the second
epoch), so the flow's process never opens the partitions itself. Prints the rows deleted
after each pass; ends when its stdin closes, i.e. with the process that started it.

The partitions' tables are Bytewax's, not a public API: this module is the one place that
reads them, ``BYTEWAX_SCHEMA`` names what it relies on, and it stops with a clear message
(and ``tests/test_bytewax_contract.py`` fails) when a Bytewax upgrade changes them.
"""

from __future__ import annotations

import select
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer

MARGIN_EPOCHS = 2
"""Markers younger than the committed epoch minus this stay: a resume might be near."""

BYTEWAX_SCHEMA = {
    "snaps": {"step_id", "state_key", "snap_epoch", "ser_change"},
    "commits": {"commit_epoch"},
}
"""The columns of Bytewax's (0.21) recovery partitions read here: a snapshot row per key
and epoch, ``ser_change`` NULL for a discarded key; each partition's committed epoch."""


def schema_mismatch(db_dir: Path) -> str | None:
    """Why the partitions in ``db_dir`` are not the tables this module knows; None if
    they are (or there are none yet)."""
    for part in sorted(db_dir.glob("part-*.sqlite3")):
        con = sqlite3.connect(part, timeout=5.0)
        try:
            for table, needed in BYTEWAX_SCHEMA.items():
                have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                if missing := needed - have:
                    return (
                        f"{part}: Bytewax's recovery table {table!r} has no column(s) "
                        f"{sorted(missing)}; this Bytewax version stores recovery differently "
                        "and dataflow/prune.py must be adapted to it"
                    )
        finally:
            con.close()
    return None


def prune_deleted(db_dir: Path) -> int:
    """Delete the deletion markers no resume can need; returns the rows deleted.

    A marker is needed while an older snapshot of its key exists (it hides that one) or
    while a resume could start before it. Bytewax never resumes before its committed
    epoch (it garbage-collects superseded snapshots up to there itself), so a marker that
    is its key's oldest row and lies behind the commit means what no row means: no state
    for that key. The markers are found by a read, which never blocks Bytewax's writer;
    only their deletion takes the write lock, briefly.
    """
    deleted = 0
    for part in sorted(db_dir.glob("part-*.sqlite3")):
        con = sqlite3.connect(part, timeout=5.0)  # Bytewax's own connection waits 5 s too
        try:
            (committed,) = con.execute("SELECT MIN(commit_epoch) FROM commits").fetchone()
            if committed is None:
                continue
            markers = con.execute(
                """SELECT step_id, state_key, snap_epoch FROM snaps AS d
                   WHERE d.ser_change IS NULL AND d.snap_epoch < ?
                   AND NOT EXISTS (
                       SELECT 1 FROM snaps AS o
                       WHERE o.step_id = d.step_id AND o.state_key = d.state_key
                       AND o.snap_epoch < d.snap_epoch)""",
                (committed - MARGIN_EPOCHS,),
            ).fetchall()
            con.executemany(
                "DELETE FROM snaps WHERE step_id = ? AND state_key = ? AND snap_epoch = ? "
                "AND ser_change IS NULL",
                markers,
            )
            con.commit()
            deleted += len(markers)
        finally:
            con.close()
    return deleted


def snapshot_rows(db_dir: Path, markers_only: bool = False) -> int:
    """Rows in all partitions' snapshot tables (markers included), or only the markers."""
    query = "SELECT COUNT(*) FROM snaps" + (" WHERE ser_change IS NULL" if markers_only else "")
    rows = 0
    for part in sorted(db_dir.glob("part-*.sqlite3")):
        con = sqlite3.connect(part, timeout=5.0)
        try:
            rows += con.execute(query).fetchone()[0]
        finally:
            con.close()
    return rows


app = typer.Typer(add_completion=False)


@app.command(help=__doc__.split("\n\n")[0])
def main(
    db_dir: Annotated[Path, typer.Argument(help="The flow's recovery directory.")],
    every: Annotated[float, typer.Option(min=0.0, help="Seconds between passes.")] = 30.0,
    count: Annotated[
        bool, typer.Option("--count", help="Print the snapshot rows and exit.")
    ] = False,
    markers: Annotated[
        bool, typer.Option("--markers", help="Print the deletion markers held and exit.")
    ] = False,
) -> None:
    if mismatch := schema_mismatch(db_dir):
        print(f"not pruning: {mismatch}", file=sys.stderr, flush=True)
        raise typer.Exit(2)
    if count or markers:
        print(snapshot_rows(db_dir, markers_only=markers))
        return
    while True:
        try:
            print(prune_deleted(db_dir), flush=True)
        except sqlite3.Error as e:  # busy, or a partition mid-creation: the next pass retries
            print(f"pruning {db_dir} failed: {e}", file=sys.stderr, flush=True)
        ready, _, _ = select.select([sys.stdin], [], [], every)
        if ready and not sys.stdin.readline():
            return  # stdin closed: the flow's process has ended


if __name__ == "__main__":
    app(prog_name="python -m dataflow.prune")
