"""Run mini-batches through one worker process, and the settings and warm pool its workers share.

For each mini-batch: stage its inputs locally, try it up to ``run_max_try`` times (a killed or
dead worker is replaced by a fresh one), then publish its part, its dead letter (when items
failed) and last its status, each in one atomic write. A status that says succeeded therefore
always has its part, and a retried mini-batch replaces its part instead of adding a copy. The
publishing runs in a thread of the task while the worker runs the next mini-batch (see
``publishing``); the task waits for it before it reports.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import EntryScriptLoadError, RunOutputError, StorageError
from airflow_parallelrun.core.execution.gpus import with_own_gpu
from airflow_parallelrun.core.execution.pool import PoolSpec, PoolUnavailable, lease_worker, warm_pool
from airflow_parallelrun.core.execution.pool.protocol import pool_dir_path
from airflow_parallelrun.core.execution.publishing import Finished, Publisher, publish
from airflow_parallelrun.core.execution.runner import TryResult, WorkerProcess, WorkerSettings
from airflow_parallelrun.core.execution.script_outputs import clear_outputs, move_outputs
from airflow_parallelrun.core.execution.task_resources import TaskResources
from airflow_parallelrun.core.execution.try_status import status_of_tries
from airflow_parallelrun.core.execution.venvs import worker_python
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.inputs.prefetch import Prefetch
from airflow_parallelrun.core.models.refs import ModelError
from airflow_parallelrun.core.models.staging import model_environment
from airflow_parallelrun.core.outputs.parts import PART_EXTENSIONS
from airflow_parallelrun.core.outputs.status import FAILED, BatchStatus
from airflow_parallelrun.core.storage.manifest import check_run_key

if TYPE_CHECKING:
    from airflow_parallelrun.core.spec import RunSpec

log = logging.getLogger(__name__)


#: The variables numerical libraries (OpenMP, OpenBLAS, MKL, Accelerate, numexpr) size their
#: thread pools by.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def thread_limits(processes: int) -> dict[str, str]:
    """Return thread-count variables that share this machine's cores among ``processes`` workers.

    Each library would otherwise start a thread per core in every worker: ``processes`` times
    too many threads, which on a busy node costs more than it gains. A variable already set
    where the task runs, or in ``environment_variables``, wins.
    """
    threads = str(max(1, (os.cpu_count() or 1) // max(processes, 1)))
    return {name: threads for name in THREAD_VARIABLES if name not in os.environ}


def worker_environment(config: Any) -> dict[str, str]:
    """Return the variables a worker of this run starts with: thread limits, models, then the config's."""
    processes = int(config.process_count_per_node or os.cpu_count() or 1)
    return thread_limits(processes) | model_environment(config.models) | dict(config.environment_variables)


def worker_settings(spec: RunSpec) -> WorkerSettings:
    """Return what every worker of this run hosts, before the folders a worker is given."""
    config = spec.config
    return WorkerSettings(
        entry_script=spec.entry_script,
        arguments=spec.arguments,
        environment_variables=worker_environment(config),
        logging_level=config.logging_level,
    )


def pool_spec_of(spec: RunSpec) -> PoolSpec | None:
    """Return the warm-worker pool this run's tasks use on a node, or None without warm workers.

    A run whose output is local shares its output folder with the workers; one whose output is
    remote gives each worker a local folder of its own, which the task leasing it uploads.
    """
    config = spec.config
    if not config.warm_workers:
        return None
    out = spec.layout().output
    shared = out.is_local
    return PoolSpec(
        settings=replace(
            worker_settings(spec),
            output_dir=out.path if shared else "",
            log_dir=out.join("_parallelrun", "logs", "user") if shared else "",
        ),
        size=int(config.process_count_per_node or os.cpu_count() or 1),
        idle_timeout=float(config.worker_idle_timeout),
        output_location=out.url,
        gpus_per_node=config.gpus_per_node,
        monitor_interval=float(config.resource_monitor_interval),
    )


def start_warm_workers(spec: RunSpec, tasks: int, run_key: str | None = None) -> int:
    """Have this node's pool start the run's workers now, up to one per run task; return how many.

    The partition task calls this, so that imports and ``init()`` overlap with Airflow
    scheduling the run tasks. It is a head start only: whatever goes wrong is logged, and the
    run tasks start their workers as they would have.
    """
    try:
        pool = pool_spec_of(spec)
        if pool is None or tasks <= 0 or not spec.entry_script:
            return 0
        pool = pool.with_python(worker_python(spec.config, run_key=run_key))
        return warm_pool(pool, min(pool.size, tasks))
    except (OSError, PoolUnavailable, ModelError, EntryScriptLoadError) as exc:
        log.warning("could not start warm workers ahead of the run tasks: %s", exc)
        return 0


class BatchRunner:
    """Run mini-batches one after another through one worker process, replaced when it dies.

    ``init()`` therefore runs once per task, not once per mini-batch, unless a try kills the
    worker (a timeout) or the worker dies.
    """

    def __init__(self, spec: RunSpec, scratch: str, run_key: str | None = None, task_try: int = 1) -> None:
        self.spec = spec
        self.run_key = run_key
        self.task_try = task_try
        self.layout = spec.layout()
        self.scratch = scratch
        out = self.layout.output
        if out.is_local:
            output_dir, log_dir, self.upload_dir = out.path, out.join("_parallelrun", "logs", "user"), None
        else:
            output_dir = self._folder("output")
            log_dir = self._folder("output", "_parallelrun", "logs", "user")
            self.upload_dir = output_dir
        self.settings = replace(
            worker_settings(spec), output_dir=output_dir, log_dir=log_dir, working_dir=self._folder("work")
        )
        self.pool_spec = pool_spec_of(spec)
        self.worker: WorkerProcess | None = None
        self.prefetch = Prefetch(lambda mb: self._folder("input", mb.id), spec.config.prefetch_mini_batches)
        self.publisher = Publisher()
        self.resources = TaskResources(spec, self, scratch, task_try)
        # Set by the run step's ProgressMonitor (progress_update_timeout): why the task is stuck, and
        # the wait for a warm worker, which its clock does not count.
        self.stuck: Any = lambda: None
        self.waiting: Any = contextlib.nullcontext

    def _folder(self, *parts: str) -> str:
        path = os.path.join(self.scratch, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def __enter__(self) -> BatchRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.prefetch.close()
        self.publisher.close()
        self.resources.close()
        if self.worker is not None:
            result = self.worker.shutdown()
            if result is not None and not result.ok:
                log.warning("shutdown() failed: %s\n%s", result.message, result.traceback)
            self.worker = None

    def run(self, mb: MiniBatch, run_id: str | None, upcoming: Sequence[MiniBatch] = ()) -> BatchStatus:
        """Stage and try one mini-batch, then hand it over to publishing; return its status.

        ``upcoming`` are the mini-batches this task runs next: their inputs are fetched while
        this one runs (see ``Prefetch``). The status is published, and its ``part`` and
        ``seconds_total`` set, in the background (see ``publishing``): :meth:`wait` before
        counting on it. Raises what an earlier mini-batch's publish raised.
        """
        self.publisher.check()
        config = self.spec.config
        started, began = time.perf_counter(), time.time()
        # A SQL sink stages its rows from the part: it needs one, in parquet, whatever the output action.
        fmt = "rows" if self.spec.sink is not None else config.append_row_format
        ext = PART_EXTENSIONS[fmt]
        wants_part = config.output_action == "append_row" or self.spec.sink is not None
        part_local = os.path.join(self.scratch, f"{mb.id}.{ext}") if wants_part else None
        result, tries = self._stage_and_try(mb, part_local, fmt, upcoming)
        status = status_of_tries(mb, result, tries, run_id)
        status.run_key, status.task_try = self.run_key, self.task_try
        if status.succeeded and part_local is not None and self.spec.sink is not None:
            # Rows go to the sink's staging table only while the run is still ours.
            self._check_run_key()
            part_local = self._stage_rows(mb, status, part_local)
        self.resources.stamp(status, began)
        done = Finished(mb, status, part_local, ext, self._set_aside_outputs(mb, status), started)
        self.publisher.submit(mb.id, functools.partial(publish, self.layout, self.run_key, done))
        return status

    def wait(self) -> None:
        """Wait until every mini-batch run so far is published; raise the first publish that failed."""
        self.publisher.wait()

    def _check_run_key(self) -> None:
        if self.run_key is None:
            return
        try:
            check_run_key(self.layout, self.run_key)
        except Exception:
            if self.upload_dir is not None:
                clear_outputs(self.upload_dir, keep_logs=False)
            raise

    def _set_aside_outputs(self, mb: MiniBatch, status: BatchStatus) -> str | None:
        """Move what the worker wrote for ``summary_only`` to a folder of this mini-batch's own.

        Its publish uploads from there, so the next try, which clears the worker's output
        folder first, cannot remove them. A failed mini-batch keeps only the user's logs.
        """
        if self.upload_dir is None:
            return None
        if not status.succeeded:
            clear_outputs(self.upload_dir, keep_logs=True)
        return move_outputs(self.upload_dir, self._folder("publish", mb.id))

    def _stage_rows(self, mb: MiniBatch, status: BatchStatus, part_local: str) -> str | None:
        """Commit the part's rows to the SQL sink's staging table; return the part, if still wanted.

        After the worker wrote the part and before the status says succeeded: a task killed in
        between runs the mini-batch again and replaces the same staged rows. Rows that do not
        fit the staging table (columns earlier mini-batches did not return) fail the mini-batch.
        """
        from airflow_parallelrun.core.sql.staging import stage_part

        assert self.spec.sink is not None
        try:
            stage_part(self.spec.sink, self.run_key, mb.id, part_local)
        except RunOutputError as exc:
            log.warning("%s: %s", mb.id, exc)
            status.status, status.error_category, status.error_message = FAILED, exc.category, str(exc)
            status.items_failed, status.items_succeeded = status.items_total, 0
        if status.succeeded and self.spec.config.output_action == "append_row":
            return part_local
        os.unlink(part_local)  # summary_only: the table instead of the merged file
        return None

    def kill_worker(self) -> None:
        """Kill the worker now (from another thread): the mini-batch it runs ends as its worker died."""
        if (worker := self.worker) is not None:
            worker.kill()

    def drop(self, mb: MiniBatch) -> None:
        """Forget a mini-batch this task will not run: stop fetching it and remove what was fetched."""
        self.prefetch.drop(mb.id)

    def _stage_and_try(
        self, mb: MiniBatch, part_local: str | None, fmt: str, upcoming: Sequence[MiniBatch]
    ) -> tuple[TryResult, int]:
        """Fetch the mini-batch's inputs to a local folder and try it; return the last try and the count.

        The next mini-batches' fetch starts once this one's inputs are here, so the two never
        share the network and the worker never waits on both.
        """
        staged = self._folder("input", mb.id)
        try:
            try:
                local_mb = self.prefetch.take(mb)
            except StorageError:
                # The storage kept failing, not the input: fail the task, to be retried or cleared.
                raise
            except Exception as exc:
                log.warning("cannot fetch the inputs of %s", mb.id, exc_info=True)
                return (
                    TryResult(
                        ok=False,
                        items=mb.items,
                        category="input",
                        message=f"cannot fetch the inputs of {mb.id}: {type(exc).__name__}: {exc}",
                        traceback=traceback.format_exc(),
                    ),
                    1,
                )
            self.prefetch.start(upcoming)
            return self._tries(local_mb, part_local, fmt)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _start_worker(self, mb: MiniBatch, fmt: str) -> WorkerProcess:
        """Borrow a warm worker from this node's pool, or start one of this task's own."""
        python = worker_python(self.spec.config, run_key=self.run_key, mini_batch=mb, part_format=fmt)
        if self.pool_spec is not None:
            try:
                with self.waiting():
                    leased = lease_worker(self.pool_spec.with_python(python))
            except PoolUnavailable as exc:
                log.warning("no warm worker pool (%s); starting a worker of this task's own", exc)
                self.pool_spec = None
            else:
                if self.upload_dir is not None:
                    self.upload_dir = leased.settings.output_dir
                how = f"started, init() {leased.init_seconds:.2f}s" if leased.fresh else "warm"
                log.info("leased worker pid %s from the pool (%s)", leased.pid, how)
                if leased.init_output:
                    log.info(
                        "what the entry script printed while the pool started worker pid %s:\n%s",
                        leased.pid,
                        leased.init_output.rstrip("\n"),
                    )
                return leased
        config = self.spec.config
        processes = int(config.process_count_per_node or os.cpu_count() or 1)
        own = with_own_gpu(
            replace(self.settings, python=python), config.gpus_per_node, processes, pool_dir_path()
        )
        worker = WorkerProcess(own)
        worker.start()
        return worker

    def _tries(self, mb: MiniBatch, part_local: str | None, fmt: str) -> tuple[TryResult, int]:
        config = self.spec.config
        result = TryResult(ok=False, category="not_run", message="not tried")
        for tries in range(1, config.run_max_try + 1):
            if self.worker is None or not self.worker.alive():
                try:
                    self.worker = self._start_worker(mb, fmt)
                except EntryScriptLoadError as exc:
                    # A script that cannot load fails the same way on every try.
                    self.worker = None
                    return TryResult(
                        ok=False,
                        items=mb.items,
                        category=exc.category,
                        message=str(exc),
                        traceback=exc.traceback,
                    ), tries
            if self.upload_dir is not None:
                # What an earlier, failed try wrote must not be published with this one's.
                clear_outputs(self.upload_dir, keep_logs=True)
            result = self.worker.run(mb, part_local, fmt, config.run_invocation_timeout)
            if stuck := self.stuck():  # the watchdog killed the worker: no more tries
                return replace(result, ok=False, category="progress_timeout", message=stuck), tries
            if result.ok or result.category == "input":
                return result, tries
            log.warning(
                "%s try %d of %d failed: [%s] %s",
                mb.id,
                tries,
                config.run_max_try,
                result.category,
                result.message,
            )
            if result.traceback:
                log.warning("%s", result.traceback)
        return result, config.run_max_try


__all__ = [
    "THREAD_VARIABLES",
    "BatchRunner",
    "pool_spec_of",
    "start_warm_workers",
    "thread_limits",
    "worker_environment",
    "worker_settings",
]
