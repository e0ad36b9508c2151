"""Bytewax recovery, on by default: state snapshots and Kafka offsets committed together.

At each epoch close Bytewax writes every touched key's snapshot and each partition's
next offset to SQLite partitions under ``settings.recovery_dir``. A restarted flow
resumes from the last complete epoch: its state and its input position agree, so each
event after that point is folded exactly once more into state that had not seen it.
Store writes made after that epoch are overwritten with the same values, and a user read
back from the store skips the offsets it already applied (README, *Crashes, restarts,
scale-out*; ``tests/test_stream_guarantees.py``).
"""

from __future__ import annotations

import fcntl
import logging
from datetime import timedelta

from bytewax.recovery import RecoveryConfig, init_db_dir

from featurestore.settings import Settings

log = logging.getLogger(__name__)


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    """The flow's RecoveryConfig, creating the partitions the first time; None if disabled."""
    if not settings.recovery:
        log.warning(
            "Bytewax recovery is off: a restart begins at start_offset=%s", settings.start_offset
        )
        return None
    db_dir = settings.recovery_dir
    assert db_dir is not None
    db_dir.mkdir(parents=True, exist_ok=True)
    # Processes of one cluster may start together: one creates the partitions.
    with open(db_dir / ".init.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(db_dir.glob("part-*.sqlite3")):
            init_db_dir(db_dir, settings.recovery_partitions)
            log.info("created %d recovery partition(s) in %s", settings.recovery_partitions, db_dir)
    return RecoveryConfig(db_dir)


def epoch_interval(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.epoch_seconds)
