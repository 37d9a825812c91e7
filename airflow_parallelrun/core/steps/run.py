"""The run step: run a task's mini-batches through one worker process, publish what each gave.

For each mini-batch: stage its inputs locally, try it up to ``run_max_try`` times (a killed or
dead worker is replaced by a fresh one), then publish its part, its dead letter (when items
failed) and last its status, each in one atomic write. A status that says succeeded therefore
always has its part, and a retried mini-batch replaces its part instead of adding a copy.
A mini-batch is published in a thread of the task while the next one runs; the task waits for
every publish before it returns, and before it counts dead letters to decide on an abort.

A failure that makes the run hopeless (the entry script cannot load, or a threshold is already
exceeded) writes an abort marker; mini-batches not yet started then end as skipped.

Every record carries the run's key. A task checks that the manifest is still its run's before
it starts and again before it publishes each mini-batch: once another run has partitioned the
same output path, it publishes nothing more and raises ``RunSuperseded``. A record of a run
the manifest does not accept (a straggler that published between those checks) is ignored by
the reuse, the abort and threshold counting here and by the aggregate step.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.execution.batch_runner import BatchRunner
from airflow_parallelrun.core.execution.pool import sweep_leftovers
from airflow_parallelrun.core.execution.progress_monitor import watch_task
from airflow_parallelrun.core.outputs.counting import count_dead_letters
from airflow_parallelrun.core.outputs.status import SKIPPED, BatchStatus
from airflow_parallelrun.core.outputs.thresholds import any_bound, exceeded, thresholds_of
from airflow_parallelrun.core.storage.concurrent import READS_IN_FLIGHT, map_ahead
from airflow_parallelrun.core.storage.manifest import (
    RunLayout,
    accepted_keys,
    check_run_key,
    read_mini_batches,
)

if TYPE_CHECKING:
    from airflow_parallelrun.core.inputs.minibatch import MiniBatch
    from airflow_parallelrun.core.spec import RunSpec

log = logging.getLogger(__name__)


#: Whether this process has swept old leftovers once already.
_swept = False


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    global _swept
    if not _swept:
        # A killed task leaves its scratch folder behind; without warm workers no pool sweeps it.
        _swept = True
        if removed := sweep_leftovers():
            log.info("removed %d leftovers of killed tasks older than a day: %s", len(removed), removed[:5])
    root = tempfile.mkdtemp(prefix="parallelrun-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def abort_reason(layout: RunLayout, accepted: Collection[str | None] | None = None) -> str | None:
    """Return why the run was aborted, or None if it was not (or another run wrote the marker)."""
    record = layout.output.read_json_if_exists(layout.abort)  # asked before each mini-batch: one read
    if record is None:
        return None
    if accepted is not None and record.get("run_key") not in accepted:
        return None
    return str(record.get("reason", "aborted"))


def run_mini_batches(
    indexes: Sequence[int],
    spec: RunSpec,
    *,
    run_id: str | None = None,
    run_key: str | None = None,
    honour_abort: bool = True,
    task_try: int = 1,
    task_key: str | None = None,
) -> list[BatchStatus]:
    """Run the mini-batches at ``indexes`` in order; return a status for each.

    A mini-batch whose status already says it succeeded, in this run or in one it resumed, is
    not run again. With ``honour_abort``, a mini-batch not yet started when the run was aborted
    is skipped: its returned status says so and nothing is written for it. ``run_key`` is the
    key the partition step minted (None: the manifest's own); raises ``RunSuperseded`` when the
    manifest belongs to another run by now. ``task_try`` (the Airflow task's try number) is
    recorded in each status this call writes, ``task_key`` names its progress record; raises
    ``ProgressTimeout`` when ``progress_update_timeout`` passes without a mini-batch finishing.
    """
    layout = spec.layout()
    header = check_run_key(layout, run_key)
    run_key, accepted = header.get("run_key"), accepted_keys(header)
    statuses: list[BatchStatus] = []
    key = task_key or f"task-{indexes[0] if indexes else 0:06d}"
    with (
        _scratch() as scratch,
        BatchRunner(spec, scratch, run_key, task_try) as runner,
        watch_task(layout, spec.config, key, len(indexes), run_key, runner) as monitor,
    ):
        queue = _Upcoming(layout, read_mini_batches(layout, indexes, header), accepted)
        with contextlib.closing(queue):
            for mb, previous in queue:
                status = _reused_or_skipped(mb, previous, runner, queue, honour_abort)
                if status is not None:
                    statuses.append(monitor.finished(status))
                    continue
                monitor.started(mb.id)
                status = runner.run(mb, run_id, queue.next_to_run(spec.config.prefetch_mini_batches))
                statuses.append(monitor.finished(status))
                monitor.raise_if_stuck()
                if status.items_failed or not status.succeeded:
                    # Its dead letter must be published before the abort decision counts it.
                    runner.wait()
                    _abort_if_hopeless(layout, spec, status, accepted, int(header["total_mini_batches"]))
        # Every mini-batch published (and any publish that failed raised) before the task reports.
        runner.wait()
    return statuses


def _reused_or_skipped(
    mb: MiniBatch, previous: BatchStatus | None, runner: BatchRunner, queue: _Upcoming, honour_abort: bool
) -> BatchStatus | None:
    """Return the status of a mini-batch that is not to run (done already, or the run aborted), or None."""
    if _reusable(previous, queue.accepted):
        assert previous is not None
        log.info("%s already succeeded (run %s); reusing its output", mb.id, previous.run_id)
        return previous
    reason = abort_reason(queue.layout, queue.accepted) if honour_abort else None
    if reason is not None:
        log.warning("%s skipped: the run was aborted: %s", mb.id, reason)
        runner.drop(mb)
        return _skipped(mb, reason)
    return None


def run_mini_batch(index: int, spec: RunSpec, **kwargs: Any) -> BatchStatus:
    """Run one mini-batch; see :func:`run_mini_batches`."""
    return run_mini_batches([index], spec, **kwargs)[0]


def _skipped(mb: MiniBatch, reason: str) -> BatchStatus:
    """Return the status of a mini-batch not run because the run was aborted (nothing is written)."""
    return BatchStatus(
        id=mb.id,
        index=mb.index,
        status=SKIPPED,
        inputs=mb.inputs,
        error_category="aborted",
        error_message=reason,
    )


def _reusable(previous: BatchStatus | None, accepted: Collection[str | None]) -> bool:
    """Tell whether a mini-batch's earlier status lets its output be reused instead of running it."""
    return previous is not None and previous.succeeded and previous.run_key in accepted


class _Upcoming:
    """A task's mini-batches in order, each with its earlier status, read ahead when asked.

    On a remote store the earlier statuses are read several at once (``map_ahead``), from the
    task's start: one round trip for up to ``READS_IN_FLIGHT`` mini-batches, not one each
    between two ``run()`` calls. Only the statuses of this task's own mini-batches are read,
    and only this task (or an earlier try of it) writes them. On local disk each is read when
    first looked at: at its turn, or when the mini-batches to fetch ahead are chosen.
    """

    def __init__(
        self, layout: RunLayout, mini_batches: Iterable[MiniBatch], accepted: Collection[str | None]
    ) -> None:
        self.layout, self.accepted = layout, accepted
        ahead = 0 if layout.output.is_local else READS_IN_FLIGHT
        self._source = map_ahead(self._with_previous, mini_batches, ahead)
        self._read: collections.deque[tuple[MiniBatch, BatchStatus | None]] = collections.deque()

    def _with_previous(self, mb: MiniBatch) -> tuple[MiniBatch, BatchStatus | None]:
        record = self.layout.output.read_json_if_exists(self.layout.status(mb.id))
        return mb, None if record is None else BatchStatus.from_dict(record)

    def _read_one(self) -> bool:
        found = next(self._source, None)
        if found is None:
            return False
        self._read.append(found)
        return True

    def __iter__(self) -> Iterator[tuple[MiniBatch, BatchStatus | None]]:
        while self._read or self._read_one():
            yield self._read.popleft()

    def next_to_run(self, count: int) -> list[MiniBatch]:
        """Return the next ``count`` mini-batches that will run (their output is not reusable)."""
        found = [mb for mb, previous in self._read if not _reusable(previous, self.accepted)]
        while len(found) < count and self._read_one():
            mb, previous = self._read[-1]
            if not _reusable(previous, self.accepted):
                found.append(mb)
        return found[:count]

    def close(self) -> None:
        """Stop the reads ahead (the task is done, or failing)."""
        self._source.close()


def _abort_if_hopeless(
    layout: RunLayout, spec: RunSpec, status: BatchStatus, accepted: Collection[str | None], total: int
) -> None:
    """Write the abort marker when the run cannot succeed any more."""
    if status.error_category in ("entry_script_load", "environment"):  # every mini-batch fails alike
        _write_abort(
            layout, f"the entry script cannot load: {status.error_message}", status.id, status.run_key
        )
        return
    if not any_bound(spec.config):
        return
    records = [
        record
        for record in (
            layout.output.read_json(p) for p in layout.output.listdir(layout.errors) if p.endswith(".json")
        )
        # Only this run's dead letters count (a straggler of another run may have left one).
        if record.get("run_key") in accepted
    ]
    counts = count_dead_letters(total, records)
    reasons = exceeded(thresholds_of(spec.config), counts)
    if reasons:
        _write_abort(layout, "; ".join(reasons), status.id, status.run_key)


def _write_abort(layout: RunLayout, reason: str, by: str, run_key: str | None) -> None:
    if abort_reason(layout, {run_key}) is not None:
        return
    log.error("aborting the run: %s; mini-batches not yet started will be skipped", reason)
    layout.output.write_json(
        layout.abort,
        {"reason": reason, "by": by, "at": datetime.now(UTC).isoformat(), "run_key": run_key},
    )


__all__ = ["abort_reason", "run_mini_batch", "run_mini_batches"]
