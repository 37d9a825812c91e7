"""Watch one run task while it runs: write its progress record, log progress lines, catch a stuck mini-batch.

One thread per run task does the three, so none of them waits on the mini-batch loop:

- The record (``outputs/progress.py``) is written at the task's start and whenever a mini-batch
  started or finished: at once on local disk, at most once a second on a remote store
  (``REMOTE_WRITE_INTERVAL``), so a task of many quick mini-batches sends one small put a
  second, not one per mini-batch. Only the last write, at the task's end, is the task's own.
- Every ``progress_log_interval`` seconds it logs Azure's "Processed X of Y mini batches" line
  for the task and for the whole run (``read_progress``).
- With ``progress_update_timeout``, when no mini-batch of this task has finished for that many
  seconds while one runs, it kills the task's worker (``on_stuck``); the mini-batch loop then
  fails the task with :class:`ProgressTimeout`. Time spent waiting for a warm worker of the
  node's pool (``waiting()``) does not count: the pool is busy with other tasks' mini-batches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import ParallelRunError
from airflow_parallelrun.core.outputs.progress import (
    TaskProgress,
    progress_line,
    read_progress,
    run_progress_line,
)
from airflow_parallelrun.core.storage.atomic import write_local_file

if TYPE_CHECKING:
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.outputs.status import BatchStatus
    from airflow_parallelrun.core.storage.location import Location
    from airflow_parallelrun.core.storage.manifest import RunLayout

log = logging.getLogger(__name__)

#: Seconds between two writes of a task's record on a remote store (but its last).
REMOTE_WRITE_INTERVAL = 1.0
#: How often the thread wakes to check the watchdog and the log interval.
TICK = 0.5


class ProgressTimeout(ParallelRunError):
    """A run task finished no mini-batch within ``progress_update_timeout``: it is stuck."""


class ProgressMonitor:
    """The thread that keeps a run task's record, logs its progress and watches for a stuck mini-batch."""

    def __init__(
        self,
        layout: RunLayout,
        progress: TaskProgress,
        config: ParallelRunConfig,
        on_stuck: Callable[[], object] = lambda: None,
    ) -> None:
        self.layout, self.progress, self.on_stuck = layout, progress, on_stuck
        self.timeout = config.progress_update_timeout
        self.log_interval = float(config.progress_log_interval)
        self.timeouts = (config.run_invocation_timeout, config.run_max_try)
        self.write_interval = 0.0 if layout.output.is_local else REMOTE_WRITE_INTERVAL
        #: Why the task is stuck, once the watchdog fired.
        self.expired: str | None = None
        self._wake = threading.Event()
        self._stop = False
        self._dirty = False
        self._last_progress = time.monotonic()
        self._waiting_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="parallelrun-progress", daemon=True)

    def __enter__(self) -> ProgressMonitor:
        self._changed()  # the first record goes out from the thread at once: the task does not wait
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
        self.progress.finish()
        self._write()
        if self.log_interval:
            self._log_lines(whole_run=False)  # reading every record would delay the task's end

    def started(self, mb_id: str) -> None:
        """Note that ``mb_id`` starts now (its record write goes to the thread)."""
        self.progress.start_mini_batch(mb_id)
        self._changed()

    def finished(self, status: BatchStatus) -> BatchStatus:
        """Count a finished mini-batch (run, reused or skipped); return its status."""
        self.progress.add(status)
        self._last_progress = time.monotonic()
        self._changed()
        return status

    def raise_if_stuck(self) -> None:
        if self.expired is not None:
            raise ProgressTimeout(self.expired)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Stop the watchdog's clock for the block: the task waits for a worker, it is not stuck."""
        self._waiting_since = time.monotonic()
        try:
            yield
        finally:
            self._last_progress += time.monotonic() - self._waiting_since
            self._waiting_since = None

    def _changed(self) -> None:
        self._dirty = True
        self._wake.set()

    def _write(self) -> None:
        self._dirty = False
        try:
            write_record(
                self.layout.output, self.layout.progress(self.progress.task), self.progress.snapshot()
            )
        except Exception as exc:  # progress is for people watching: it never fails the run
            log.warning(
                "cannot write the progress record of %s: %s: %s", self.progress.task, type(exc).__name__, exc
            )

    def _loop(self) -> None:
        last_write = -math.inf
        next_log = time.monotonic() + self.log_interval
        while not self._stop:
            self._wake.wait(TICK)
            self._wake.clear()
            now = time.monotonic()
            if self._dirty and now - last_write >= self.write_interval and not self._stop:
                self._write()
                last_write = now
            if self.log_interval and now >= next_log:
                self._log_lines()
                next_log = now + self.log_interval
            if self.timeout is not None and self.expired is None and self._stuck_for(now) > self.timeout:
                self._expire(now)

    def _stuck_for(self, now: float) -> float:
        if not self.progress.running or self._waiting_since is not None:
            return 0.0
        return now - self._last_progress

    def _expire(self, now: float) -> None:
        running = ", ".join(self.progress.running)
        run_timeout, tries = self.timeouts
        self.expired = (
            f"no mini-batch of task {self.progress.task} finished for {now - self._last_progress:.0f}s, more "
            f"than progress_update_timeout={self.timeout:g}s, while mini-batch {running} was running: it is "
            "stuck (a hung run() or init(), a deadlock, a network call without a timeout). Its worker was "
            "killed and this task fails; Airflow's retries, or clearing the task, run its unfinished "
            "mini-batches again. See this task's log for what the entry script printed last; if the "
            "mini-batch only needs longer, raise progress_update_timeout above what it needs (up to "
            f"run_max_try x run_invocation_timeout = {tries} x {run_timeout:g}s, plus init()), or set it to "
            "None to switch the watchdog off"
        )
        log.error("%s", self.expired)
        try:
            self.on_stuck()
        except Exception:
            log.exception("could not kill the stuck worker")

    def _log_lines(self, *, whole_run: bool = True) -> None:
        p = self.progress
        seconds = time.time() - p.started
        rate = p.mini_batches_done / seconds if seconds > 0 else 0.0
        eta = (p.mini_batches_total - p.mini_batches_done) / rate if rate > 0 else None
        log.info(
            "%s: %s",
            p.task,
            progress_line(
                p.mini_batches_done, p.mini_batches_total, p.items_done, p.items_failed, seconds, eta
            ),
        )
        if not whole_run:
            return
        try:
            log.info("whole run: %s", run_progress_line(read_progress(self.layout)))
        except Exception as exc:
            log.info("whole run: progress unknown (%s: %s)", type(exc).__name__, exc)


def write_record(out: Location, path: str, record: dict[str, Any]) -> None:
    """Replace ``path`` with ``record`` atomically: one put, or on local disk write-then-rename.

    Without the fsync of the run's other records: a progress record lost in a power cut is
    written again at the next mini-batch, and an fsync costs tens of milliseconds on a busy disk.
    """
    data = json.dumps(record).encode()
    if not out.is_local:
        out.write_bytes(path, data)
        return
    write_local_file(path, data, durable=False)


def watch_task(
    layout: RunLayout, config: ParallelRunConfig, task: str, total: int, run_key: str | None, runner: Any
) -> ProgressMonitor:
    """Return the monitor of a run task of ``total`` mini-batches, tied to its ``BatchRunner``."""
    monitor = ProgressMonitor(
        layout, TaskProgress(task, total, run_key=run_key), config, on_stuck=runner.kill_worker
    )
    runner.stuck, runner.waiting = (lambda: monitor.expired), monitor.waiting
    return monitor


__all__ = ["REMOTE_WRITE_INTERVAL", "ProgressMonitor", "ProgressTimeout", "watch_task", "write_record"]
