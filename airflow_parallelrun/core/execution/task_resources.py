"""A run task's part in the run's resource samples: publish its pool's, or sample its own worker.

With warm workers the node's pool samples its workers (``resource_monitor``) but cannot reach
the run's storage; the tasks that lease them publish its samples file now and then. A task
that runs a worker of its own (``warm_workers=False``, or no pool could start) samples it
itself, as ``perf/<node>/task-<first mini-batch>-try<N>.csv``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Protocol

from airflow_parallelrun.core.execution.pool.protocol import PoolSpec, PoolUnavailable, pool_dir
from airflow_parallelrun.core.execution.resource_monitor import ResourceMonitor, node_name, start_monitor
from airflow_parallelrun.core.execution.runner import WorkerProcess
from airflow_parallelrun.core.outputs.perf_files import PUBLISH_EVERY, PerfPublisher, pool_perf_file

if TYPE_CHECKING:
    from airflow_parallelrun.core.outputs.status import BatchStatus
    from airflow_parallelrun.core.spec import RunSpec

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What of a ``BatchRunner`` this needs: its pool (None: it runs a worker of its own) and worker."""

    pool_spec: PoolSpec | None
    worker: WorkerProcess | None


class TaskResources:
    """Stamp each status with when and where it ran; publish the samples of this task's workers.

    A pool's samples are published every ``PUBLISH_EVERY`` seconds by a thread of this task (and
    at its end); this task's own worker's, after the monitor's samples.
    """

    def __init__(self, spec: RunSpec, runner: Runner, scratch: str, task_try: int) -> None:
        self.layout, self.runner, self.task_try = spec.layout(), runner, task_try
        self.interval = float(spec.config.resource_monitor_interval)
        self.own_samples = os.path.join(scratch, "own-worker.perf.csv")
        self.monitor: ResourceMonitor | None = None
        self.publisher: PerfPublisher | None = None
        self._stop = threading.Event()
        pool = runner.pool_spec
        if self.interval <= 0:
            return
        if pool is None:
            self._sample_own_worker()
            return
        try:
            socket_path = os.path.join(pool_dir(), pool.key() + ".sock")
        except (OSError, PoolUnavailable):
            return  # no pool either: this task's own worker is sampled instead
        self.publisher = PerfPublisher(self.layout, pool_perf_file(socket_path), pool.key())
        threading.Thread(target=self._publish_now_and_then, name="parallelrun-perf", daemon=True).start()

    def _sample_own_worker(self) -> None:
        self.monitor = start_monitor(
            self.own_samples, self.interval, pids=self._own_worker, after_sample=self._after_sample
        )

    def _publish_now_and_then(self) -> None:
        while not self._stop.wait(PUBLISH_EVERY):
            if self.publisher is not None:
                self.publisher.maybe()

    def _after_sample(self) -> None:
        if self.publisher is not None:
            self.publisher.maybe()

    def _own_worker(self) -> list[int]:
        """Return the pid of this task's worker: not every child (a pool this task started is one)."""
        worker = self.runner.worker
        return [] if worker is None or worker.pid is None else [worker.pid]

    def stamp(self, status: BatchStatus, began: float) -> None:
        """Record in ``status`` when it began and ended (now), on which node, in which worker."""
        status.started, status.ended, status.node = round(began, 3), round(time.time(), 3), node_name()
        worker = self.runner.worker
        status.worker_pid = worker.pid if worker is not None else None
        if self.runner.pool_spec is not None or self.interval <= 0:
            return
        if self.monitor is None:  # the pool could not be reached: this task runs its own worker
            self._stop.set()
            self._sample_own_worker()
        if self.publisher is None or self.publisher.local != self.own_samples:
            # Named after the task's first mini-batch, known only now.
            key = f"task-{status.id}-try{self.task_try}"
            self.publisher = PerfPublisher(self.layout, self.own_samples, key)

    def close(self) -> None:
        """Take a last sample of this task's own worker, and publish the samples as they are now."""
        self._stop.set()
        if self.monitor is not None:
            self.monitor.stop()
        if self.publisher is not None:
            self.publisher.publish()
