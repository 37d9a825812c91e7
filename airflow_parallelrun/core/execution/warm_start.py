"""Start a run's warm workers from the very start of its partition task, while it lists and splits.

The run tasks cannot start before the partition task ends, and their first lease waits for a
worker's imports and ``init()`` (seconds, for a model): the sooner that begins, the less of it
is left when they ask. The pool's own start (a Python process, its socket) and the first
worker's therefore run in a thread beside the partition step, and the workers the run tasks
need beyond the first are asked for once the partition step knows how many run tasks there are.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from airflow_parallelrun.core.execution.batch_runner import start_warm_workers

if TYPE_CHECKING:
    from airflow_parallelrun.core.spec import RunSpec


class WarmStart:
    """Start this node's pool and one warm worker now, in a thread; the rest in :meth:`finish`.

    A head start only, as :func:`start_warm_workers`: whatever goes wrong is logged, and the run
    tasks start their workers as they would have. A partition that fails leaves its worker to
    the pool's ``worker_idle_timeout``: the pool may be another run's, still active, at the same
    output path, which stopping it would break.
    """

    def __init__(self, spec: RunSpec, run_key: str | None) -> None:
        self.spec, self.run_key = spec, run_key
        self.started = 0
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._first, name="parallelrun-warm-start", daemon=True)
        self._thread.start()

    def _first(self) -> None:
        try:
            self.started = start_warm_workers(self.spec, 1, self.run_key)
        except Exception as exc:  # raised in the partition's thread, as when it started them itself
            self._error = exc

    def finish(self, tasks: int) -> int:
        """Wait for the first worker's start to be asked; warm up to one worker per run task in all.

        Return how many workers this partition had the pool start. Raise what the start raised
        that :func:`start_warm_workers` does not log (a worker environment that cannot be built).
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self.started and tasks > self.started:
            # The pool was reached: ask it for the others (never more than its size in all).
            self.started += start_warm_workers(self.spec, tasks - self.started, self.run_key)
        return self.started


__all__ = ["WarmStart"]
