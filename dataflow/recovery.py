"""Bytewax recovery, on by default: Kafka offsets, and the few states the store lacks,
committed together.

At each epoch close Bytewax writes each partition's next offset and, for each shard of
the stateful steps it touched (``dataflow.shards``), the states not written to the store
yet, to SQLite partitions under ``settings.recovery.dir``. Everything else the epoch
changed the sinks wrote to the store within it. A restarted flow resumes from the last
complete epoch: each user it meets is read back from the store, and an event after that
point is folded again only into state that had not applied it (each stored state
carries its per-partition offsets; store writes are whole-state overwrites). README,
*Crashes, restarts, scale-out*; ``tests/test_stream_guarantees.py``.

Bytewax never removes the marker it writes for a discarded key (a shard whose users all
expired), and every epoch close scans them all; ``RecoveryPruner`` runs
``dataflow.prune`` beside the flow so the partitions hold only the keys the flow holds.

Those offsets are positions in one incarnation of the events topic. The topic's id is
kept beside the partitions; when the topic was recreated since (the in-memory dev broker
restarted, or an operator deleted and created it), the partitions are moved aside and
the flow starts afresh instead of resuming at positions of a log that no longer exists.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

from core.settings import Settings
from dataflow.metrics import RECOVERY_PRUNED

log = logging.getLogger(__name__)

TOPIC_ID_FILE = "events-topic-id"
"""Beside the partitions: the id of the events topic their offsets belong to."""


def recovery_config(
    settings: Settings, log_id: str | None = None, process_id: int = 0, processes: int = 1
) -> RecoveryConfig | None:
    """The flow's RecoveryConfig, creating this process's partitions the first time; None
    if disabled.

    ``log_id`` is the events topic's id (``eventlog.admin.events_log_id``): partitions recorded
    under another id are retired first. None (no id known) keeps them as they are.

    Bytewax needs the cluster as a whole to hold every partition once (each records its
    index and the count). Process ``process_id`` of a ``processes``-process cluster
    creates its share, partitions ``k % processes == process_id``, so one volume per
    process (compose services, a StatefulSet's claims) and one shared directory both end
    up with exactly one full set.
    """
    if not settings.recovery.enabled:
        log.warning(
            "Bytewax recovery is off: a restart begins at start_offset=%s",
            settings.kafka.start_offset,
        )
        return None
    db_dir = settings.recovery.dir
    assert db_dir is not None
    mine = own_partitions(process_id, processes, settings.recovery.partitions)
    db_dir.mkdir(parents=True, exist_ok=True)
    # Processes of one cluster may share the directory and start together.
    with open(db_dir / ".init.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if log_id is not None:
            _retire_other_log(db_dir, log_id)
        if not any((db_dir / _part(k)).exists() for k in mine):
            with tempfile.TemporaryDirectory(dir=db_dir) as tmp:
                init_db_dir(Path(tmp), settings.recovery.partitions)
                for k in mine:
                    shutil.move(Path(tmp) / _part(k), db_dir / _part(k))
            log.info("created recovery partition(s) %s in %s", mine, db_dir)
        if log_id is not None:
            (db_dir / TOPIC_ID_FILE).write_text(log_id + "\n")
    return RecoveryConfig(db_dir)


def own_partitions(process_id: int, processes: int, partitions: int) -> list[int]:
    """The recovery partitions process ``process_id`` of ``processes`` keeps."""
    if not 0 <= process_id < processes:
        raise ValueError(f"process id {process_id} is not in 0..{processes - 1}")
    if partitions < processes:
        raise ValueError(
            f"{partitions} recovery partition(s) for {processes} processes: set "
            f"RECSYS_RECOVERY_PARTITIONS to at least {processes} (one per process or more)"
        )
    return [k for k in range(partitions) if k % processes == process_id]


def _part(k: int) -> str:
    return f"part-{k}.sqlite3"


def _retire_other_log(db_dir: Path, log_id: str) -> None:
    """Move partitions recorded for another incarnation of the topic to ``retired-<time>/``.

    Partitions from before the id was recorded are kept: they most likely belong to the
    topic as it is, and dropping them would re-read it from ``start_offset``.
    """
    marker = db_dir / TOPIC_ID_FILE
    old = marker.read_text().strip() if marker.exists() else None
    parts = sorted(db_dir.glob("part-*"))
    if old is None or old == log_id or not parts:
        return
    aside = db_dir / f"retired-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    aside.mkdir(exist_ok=True)
    for p in [*parts, marker]:
        p.rename(aside / p.name)
    log.warning(
        "the events topic was recreated (id %s, recovery was recorded for %s): its old "
        "positions mean nothing now, so the flow starts afresh; old recovery moved to %s",
        log_id,
        old,
        aside,
    )


class RecoveryPruner:
    """Runs ``dataflow.prune`` on ``db_dir`` every ``every`` seconds beside a running flow.

    A child process, never a thread: Bytewax's copy of SQLite and Python's must not share
    a process (``dataflow/prune.py``). The child ends when this process closes its stdin
    or dies; the rows it deletes are counted in ``recsys_recovery_pruned_total``.
    """

    def __init__(self, db_dir: Path, every: float) -> None:
        self._dir = db_dir
        self._every = every
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> RecoveryPruner:
        cmd = [sys.executable, "-m", "dataflow.prune", str(self._dir), "--every", str(self._every)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._count, args=(self._proc,), daemon=True).start()
        return self

    @staticmethod
    def _count(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip().isdigit():
                RECOVERY_PRUNED.inc(int(line))

    def __exit__(self, *_: object) -> None:
        if self._proc is None:
            return
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


def epoch_interval(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.recovery.epoch_seconds)
