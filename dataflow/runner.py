"""Running a dataflow: ``run_flow``, the one way every flow of this project is executed
(``dataflow.run``, the API's in-process flow, the benchmark), and ``DataflowThread``, the
flow in a background thread of another process (the embedded default).

The embedded Qdrant Edge store can be opened by one process only, so the API hosts
the dataflow. ``stop()`` ends the Kafka source's partitions, which lets Bytewax finish
its last batch and return; nothing is cut mid-write.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main

from core.catalog import CatalogProvider
from core.settings import Settings
from dataflow.flow import kafka_flow, tune_gc, wait_for_model
from dataflow.recovery import RecoveryPruner, epoch_interval, recovery_config
from eventlog.admin import events_log_id, wait_for_broker
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

RESTART_MAX_SECONDS = 30.0
BROKER_WAIT_SECONDS = 10.0


def run_flow(
    flow: Dataflow,
    settings: Settings,
    recovery: RecoveryConfig | None,
    workers: int = 1,
    process_id: int | None = None,
    addresses: Sequence[str] | None = None,
    epoch: timedelta | None = None,
) -> None:
    """Execute ``flow`` until its source ends, in this thread.

    Bytewax's public entry point (``bytewax.run.cli_main``, what ``python -m bytewax.run``
    calls): one process runs its first worker in the calling thread and any others in
    threads of its own; ``process_id``/``addresses`` make it one process of a cluster.
    The interpreter is tuned for a long flow (``tune_gc``) and, with ``recovery``, the
    recovery pruner runs beside it. ``epoch`` defaults to the settings'.
    """
    tune_gc()
    pruner = (
        RecoveryPruner(recovery.db_dir, settings.recovery.prune_seconds)
        if recovery is not None
        else contextlib.nullcontext()
    )
    with pruner:
        cli_main(
            flow,
            workers_per_process=workers,
            process_id=process_id,
            addresses=None if addresses is None else list(addresses),
            epoch_interval=epoch or epoch_interval(settings),
            recovery_config=recovery,
        )


class DataflowThread:
    """The production flow (``kafka_flow``) in a thread, restarted if it fails."""

    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        catalogs: CatalogProvider,
        workers: int = 1,
    ) -> None:
        self._settings = settings
        self._store = store
        self._catalogs = catalogs
        self._workers = workers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dataflow", daemon=True)
        self.running = threading.Event()
        """Set once the flow is built and consuming."""
        self.status = "starting"
        """What the flow is doing, for /readyz."""

    def start(self) -> DataflowThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        """Run the flow; if it crashes (Kafka unreachable, say), log and start it again.

        Restarting is safe: Bytewax recovery resumes from the last epoch's snapshot and
        offsets; and each user's state remembers the offsets it applied, so what the flow
        reads again is skipped, not counted twice.
        """
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._run_once()
                return  # the model wait was stopped, or the source ended: asked to stop
            except Exception as e:
                failures = 1 if time.monotonic() - started > RESTART_MAX_SECONDS else failures + 1
                pause = min(RESTART_MAX_SECONDS, 2.0**failures)
                self.status = f"failed: {e}; retrying in {pause:.0f}s"
                log.exception("dataflow failed (%d in a row); retrying in %.0fs", failures, pause)
            finally:
                self.running.clear()
            self._stop.wait(pause)

    def _run_once(self) -> None:
        self.status = "waiting for a published model"
        if not wait_for_model(self._catalogs, self._stop):
            return
        bootstrap = self._settings.kafka.bootstrap_servers
        self.status = f"waiting for Kafka at {bootstrap}"
        wait_for_broker(bootstrap, BROKER_WAIT_SECONDS)
        flow = kafka_flow(self._settings, self._store, self._catalogs, self._stop)
        recovery = recovery_config(self._settings, events_log_id(self._settings))
        self.running.set()
        self.status = "running"
        log.info("dataflow started (%d worker(s))", self._workers)
        run_flow(flow, self._settings, recovery, self._workers)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the flow to end by itself (``exit_at_end``); True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("dataflow did not stop within %.0fs", timeout)
