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
from dataflow.sinks import StoreWrites
from dataflow.source import SourceProgress
from eventlog.admin import ensure_app_topics, events_log_id
from eventlog.health import KafkaView, KafkaWatch
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

RESTART_MAX_SECONDS = 30.0


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
    """The production flow (``kafka_flow``) in a thread, kept running without a restart of
    the process: it waits for a model and for Kafka, restarts itself with back-off if it
    fails, and starts again on a recreated events topic (a restarted in-memory broker).

    ``kafka`` (a started ``KafkaWatch``, shared with the API) tells when Kafka is there
    and which topic incarnation it holds; without one the thread runs its own. ``checks``
    is what ``/readyz`` reports about the flow and its store writes.
    """

    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        catalogs: CatalogProvider,
        workers: int = 1,
        kafka: KafkaWatch | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._catalogs = catalogs
        self._workers = workers
        self._own_watch = kafka is None
        self._kafka = kafka or KafkaWatch(settings)
        self._stop = threading.Event()
        self._run_stop = threading.Event()
        """Ends the current run only: set to start the flow again."""
        self._thread = threading.Thread(target=self._run, name="dataflow", daemon=True)
        self._log_id: str | None = None
        self.progress = SourceProgress(settings)
        self.writes = StoreWrites(self._stop)
        self.running = threading.Event()
        """Set once the flow is built and consuming."""
        self.status = "starting"
        """What the flow is doing, for /readyz."""

    def start(self) -> DataflowThread:
        if self._own_watch:
            self._kafka.start()
        self._kafka.add_listener(self._observe)
        self._thread.start()
        return self

    def checks(self) -> dict[str, tuple[bool, str]]:
        """``/readyz``'s view: name -> (passes, what it found), for the flow and its writes."""
        stall = self.progress.stall()
        if not self.running.is_set():
            flow = (False, self.status)
        else:
            flow = (stall is None, stall or self.status)
        error = self.writes.error
        return {"dataflow": flow, "store": (error is None, error or "ok")}

    def _observe(self, view: KafkaView) -> None:
        """Each probe of the Kafka watch: lag and stalls; a recreated topic restarts the run."""
        self.progress.observe(view)
        if not (self.running.is_set() and view.reachable) or self._run_stop.is_set():
            return
        if not view.topic_exists or (
            None not in (view.topic_id, self._log_id) and view.topic_id != self._log_id
        ):
            found = "gone" if not view.topic_exists else f"recreated (id {view.topic_id})"
            log.warning(
                "the events topic %s is %s: starting the dataflow again on it",
                self._settings.kafka.events_topic,
                found,
            )
            self.status = f"restarting: the events topic is {found}"
            self._run_stop.set()

    def _run(self) -> None:
        try:
            self._run_until_stopped()
        finally:
            self._release_watch()  # a flow that ended by itself (exit_at_end) needs it no more

    def _release_watch(self) -> None:
        """Stop listening to the Kafka watch, and close it if this thread made it. Twice is
        harmless: the flow's thread and ``stop`` both call it."""
        self._kafka.remove_listener(self._observe)
        if self._own_watch:
            self._kafka.close()

    def _run_until_stopped(self) -> None:
        """Run the flow; if it crashes, log and start it again after a back-off.

        Restarting is safe: Bytewax recovery resumes from the last epoch's snapshot and
        offsets; and each user's state remembers the offsets it applied, so what the flow
        reads again is skipped, not counted twice.
        """
        failures = 0
        while not self._stop.is_set():
            self._run_stop = run_stop = threading.Event()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                self._run_once(run_stop)
                if self._stop.is_set() or not run_stop.is_set():
                    return  # asked to stop, or the source ended (exit_at_end)
                continue  # the topic was recreated: run again at once
            except Exception as e:
                if self._stop.is_set():
                    log.warning("dataflow stopped: %s", e)
                    return
                failures = 1 if time.monotonic() - started > RESTART_MAX_SECONDS else failures + 1
                pause = min(RESTART_MAX_SECONDS, 2.0**failures)
                self.status = f"failed: {e}; retrying in {pause:.0f}s"
                log.exception("dataflow failed (%d in a row); retrying in %.0fs", failures, pause)
            finally:
                self.running.clear()
            self._stop.wait(pause)

    def _run_once(self, run_stop: threading.Event) -> None:
        self.status = "waiting for a published model"
        if not wait_for_model(self._catalogs, self._stop) or not self._wait_for_kafka():
            return
        ensure_app_topics(self._settings)
        self._log_id = log_id = events_log_id(self._settings)
        flow = kafka_flow(
            self._settings, self._store, self._catalogs, run_stop, self.progress, self.writes
        )
        recovery = recovery_config(self._settings, log_id)
        self.running.set()
        self.status = "running"
        log.info("dataflow started (%d worker(s))", self._workers)
        run_flow(flow, self._settings, recovery, self._workers)

    def _wait_for_kafka(self) -> bool:
        """Until the watch finds Kafka answering (True), or the thread is stopped."""
        kafka = self._kafka
        while not kafka.probed or (problem := kafka.problem()) is not None:
            if kafka.probed:
                self.status = f"waiting for Kafka: {problem}"
            if self._stop.wait(0.1):
                return False
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the flow to end by itself (``exit_at_end``); True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._run_stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("dataflow did not stop within %.0fs", timeout)
        self._release_watch()
