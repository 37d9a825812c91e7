"""A run task's part in the run's resource samples: publish its pool's, or sample its own worker.

With warm workers the node's pool samples its workers (``resource_monitor``) but cannot reach
the run's storage; the tasks that lease them publish its samples file now and then. A task
that runs a worker of its own (``warm_workers=False``, or no pool could start) samples it
itself, as ``perf/<node>/task-<first mini-batch>-try<N>.csv``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Protocol

from airflow_parallelrun.core.execution.pool.protocol import PoolSpec, PoolUnavailable, pool_dir
from airflow_parallelrun.core.execution.resource_monitor import ResourceMonitor, start_monitor
from airflow_parallelrun.core.execution.runner import WorkerProcess
from airflow_parallelrun.core.outputs.perf_files import PerfPublisher, pool_perf_file

if TYPE_CHECKING:
    from airflow_parallelrun.core.inputs.minibatch import MiniBatch
    from airflow_parallelrun.core.spec import RunSpec

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What of a ``BatchRunner`` this needs: its pool (None: it runs a worker of its own) and worker."""

    pool_spec: PoolSpec | None
    worker: WorkerProcess | None


class TaskResources:
    """Publish the samples of the workers this task uses, while it runs and when it ends."""

    def __init__(self, spec: RunSpec, runner: Runner, scratch: str, task_try: int) -> None:
        self.layout, self.runner, self.scratch, self.task_try = spec.layout(), runner, scratch, task_try
        pool = runner.pool_spec
        self.interval = float(spec.config.resource_monitor_interval)
        self.monitor: ResourceMonitor | None = None
        self.publisher: PerfPublisher | None = None
        if self.interval > 0 and pool is not None:
            try:
                socket_path = os.path.join(pool_dir(), pool.key() + ".sock")
            except (OSError, PoolUnavailable):
                return  # no pool either: this task's own worker is sampled instead
            self.publisher = PerfPublisher(self.layout, pool_perf_file(socket_path), pool.key())

    def update(self, mb: MiniBatch) -> None:
        """Start sampling this task's own worker if it runs one; publish the samples if due."""
        if self.runner.pool_spec is None and self.monitor is None and self.interval > 0:
            key = f"task-{mb.id}-try{self.task_try}"
            local = os.path.join(self.scratch, f"{key}.perf.csv")
            self.publisher = PerfPublisher(self.layout, local, key)
            self.monitor = start_monitor(
                local, self.interval, pids=self._own_worker, after_sample=self.publisher.maybe
            )
        elif self.publisher is not None:
            self.publisher.maybe()

    def _own_worker(self) -> list[int]:
        """Return the pid of this task's worker: not every child (a pool this task started is one)."""
        worker = self.runner.worker
        return [] if worker is None or worker.pid is None else [worker.pid]

    def close(self) -> None:
        """Take a last sample of this task's own worker, and publish the samples as they are now."""
        if self.monitor is not None:
            self.monitor.stop()
        if self.publisher is not None:
            self.publisher.publish()
