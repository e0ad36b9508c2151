"""A Bytewax process cluster where each process keeps its recovery on its own volume.

Bytewax needs the cluster as a whole to hold every recovery partition, not each process
(see ``bytewax.recovery``): a partition records its index and the partition count, and
the worker that holds it writes the snapshots routed to it. ``dataflow.recovery``
creates all partitions in a new recovery directory, which is right for one process or a
directory the processes share; with one volume per process (compose services, a
StatefulSet's volumeClaimTemplates) every process would then hold its own copy of
partition 0. So before a cluster process starts, ``prepare_recovery`` puts only this
process's share (partitions ``k`` with ``k % processes == process_id``) into its directory.
In a shared directory each process adds its share, which again makes one full set.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from pathlib import Path

from bytewax.recovery import init_db_dir


def parse_addresses(addresses: str) -> list[str]:
    """``"host:port;host:port"`` (Bytewax's form; commas are accepted too) as a list."""
    parts = [a.strip() for a in addresses.replace(",", ";").split(";") if a.strip()]
    for a in parts:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {a!r} is not host:port")
    if len(set(parts)) != len(parts):
        raise ValueError(f"addresses repeat: {addresses!r}")
    return parts


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


def prepare_recovery(
    recovery_dir: Path, process_id: int, processes: int, partitions: int
) -> list[int]:
    """Create this process's recovery partitions unless it already has them; returns the
    indices created (empty when there was nothing to do)."""
    mine = own_partitions(process_id, processes, partitions)
    recovery_dir.mkdir(parents=True, exist_ok=True)
    with open(recovery_dir / ".init.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [k for k in mine if not (recovery_dir / f"part-{k}.sqlite3").exists()]
        if len(missing) < len(mine):
            return []  # this process's partitions exist: resume from them
        with tempfile.TemporaryDirectory(dir=recovery_dir) as tmp:
            init_db_dir(Path(tmp), partitions)
            for k in mine:
                shutil.move(Path(tmp) / f"part-{k}.sqlite3", recovery_dir / f"part-{k}.sqlite3")
    return mine
