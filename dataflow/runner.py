"""Run the dataflow in a background thread of another process (the embedded default).

The embedded Qdrant Edge store can be opened by one process only, so the API hosts
the dataflow. ``stop()`` ends the Kafka source's partitions, which lets Bytewax finish
its last batch and return; nothing is cut mid-write.
"""

from __future__ import annotations

import logging
import threading

from bytewax.testing import cluster_main, run_main

from dataflow.flow import build_flow, wait_for_model
from featurestore.catalog import CatalogProvider
from featurestore.settings import Settings
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)


class DataflowThread:
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
        self.error: BaseException | None = None
        self.running = threading.Event()
        """Set once the flow is built and consuming."""

    def start(self) -> DataflowThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            if not wait_for_model(self._catalogs, self._stop):
                return
            flow = build_flow(self._settings, self._store, self._catalogs, self._stop)
            self.running.set()
            log.info("dataflow started (%d worker(s))", self._workers)
            if self._workers == 1:
                run_main(flow)
            else:
                cluster_main(flow, [], 0, worker_count_per_proc=self._workers)
        except BaseException as e:  # surfaced through /readyz and stop()
            self.error = e
            log.exception("dataflow crashed")
        finally:
            self.running.clear()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("dataflow did not stop within %.0fs", timeout)
