"""The progress of a run while it runs: each run task's record, and the whole run's sum of them.

Each run task instance keeps one small record, ``_parallelrun/progress/<task_key>.json``,
replaced atomically at its start, as its mini-batches finish and at its end (see
``execution/progress_monitor.py`` for when it is written). :func:`read_progress` sums them with
the manifest's totals into a :class:`RunProgress`: what the log lines, the UI view and the
summary's step times read. A record is a snapshot, never a log: a task's retry replaces it.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.outputs.status import SKIPPED, BatchStatus
from airflow_parallelrun.core.storage.concurrent import READS_IN_FLIGHT, map_ahead

if TYPE_CHECKING:
    from airflow_parallelrun.core.storage.manifest import RunLayout


def task_key(map_index: int) -> str:
    """Return the name of a run task instance's record: its zero-padded map index.

    >>> task_key(3), task_key(1234567)
    ('task-000003', 'task-1234567')
    """
    return f"task-{map_index:06d}"


@dataclass
class TaskProgress:
    """One run task instance's progress, as its record stores it.

    ``mini_batches_done`` counts every mini-batch of the task that has finished, whatever its
    outcome (succeeded, failed, skipped after an abort, or reused from an earlier run);
    ``mini_batches_failed`` those that failed; ``mini_batches_retried`` those that took more
    than one ``run()`` try. ``items_done`` counts the items of the finished mini-batches, and
    ``items_failed`` the failed ones among them.
    """

    task: str
    mini_batches_total: int
    started: float = field(default_factory=time.time)
    updated: float = 0.0
    mini_batches_done: int = 0
    mini_batches_failed: int = 0
    mini_batches_retried: int = 0
    items_done: int = 0
    items_failed: int = 0
    running: list[str] = field(default_factory=list)
    finished: bool = False
    run_key: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def start_mini_batch(self, mb_id: str) -> None:
        with self._lock:
            self.running = [mb_id]

    def add(self, status: BatchStatus) -> None:
        """Count a mini-batch that has finished (run, reused or skipped)."""
        with self._lock:
            self.running = [r for r in self.running if r != status.id]
            self.mini_batches_done += 1
            if not status.succeeded and status.status != SKIPPED:
                self.mini_batches_failed += 1
            self.mini_batches_retried += status.tries > 1
            self.items_done += status.items_total
            self.items_failed += status.items_failed

    def finish(self) -> None:
        with self._lock:
            self.running, self.finished = [], True

    def snapshot(self) -> dict[str, Any]:
        """Return the record as written, stamped with the time now (thread-safe)."""
        with self._lock:
            self.updated = time.time()
            return {f.name: copy.copy(getattr(self, f.name)) for f in fields(self) if f.name != "_lock"}


@dataclass(frozen=True)
class RunProgress:
    """The whole run's progress, summed over its run tasks' records.

    ``items_total`` is None when the partition could not count the items (a text file split by
    bytes). The rates are over the time since the first run task started (until now, or until
    the last record when every task has finished); ``eta_seconds`` is None until a mini-batch
    has finished. ``finished`` says the aggregate has written the run's final summary.
    """

    mini_batches_total: int
    mini_batches_done: int = 0
    mini_batches_failed: int = 0
    mini_batches_retried: int = 0
    items_total: int | None = None
    items_done: int = 0
    items_failed: int = 0
    started: float | None = None
    updated: float | None = None
    items_per_second: float = 0.0
    mini_batches_per_second: float = 0.0
    eta_seconds: float | None = None
    finished: bool = False
    tasks: int = 0
    tasks_finished: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_task_records(layout: RunLayout, run_key: str | None = None) -> list[dict[str, Any]]:
    """Return every run task's record of the run ``run_key`` (None: whatever run wrote them)."""
    out = layout.output
    paths = [p for p in out.listdir(layout.progress_dir) if p.endswith(".json")]

    def read(path: str) -> dict[str, Any] | None:
        try:
            return dict(out.read_json(path))
        except (FileNotFoundError, ValueError):
            return None  # removed by a new partition meanwhile, or not a record

    records = map_ahead(read, paths, 0 if out.is_local else READS_IN_FLIGHT)
    return [r for r in records if r is not None and (run_key is None or r.get("run_key") == run_key)]


def read_progress(layout: RunLayout, *, now: float | None = None) -> RunProgress:
    """Return the progress of the run at ``layout``: its run tasks' records summed with the manifest.

    Raises ``ParallelRunError`` when there is no manifest yet (the partition has not finished).
    """
    from airflow_parallelrun.core.storage.manifest import read_manifest_header

    header = read_manifest_header(layout)
    records = read_task_records(layout, header.get("run_key"))
    return sum_progress(header, records, finished=_finished(layout, header), now=now)


def sum_progress(
    header: dict[str, Any], records: list[dict[str, Any]], *, finished: bool = False, now: float | None = None
) -> RunProgress:
    """Sum task records into the run's progress; the manifest ``header`` gives the totals.

    >>> header = {"total_mini_batches": 4, "items_total": 40}
    >>> record = {"started": 100.0, "updated": 110.0, "mini_batches_done": 1, "items_done": 10}
    >>> p = sum_progress(header, [record], now=110.0)
    >>> p.mini_batches_done, p.items_per_second, p.eta_seconds
    (1, 1.0, 30.0)
    >>> sum_progress(header, []).eta_seconds is None
    True
    """
    total = int(header.get("total_mini_batches") or 0)

    def summed(name: str) -> int:
        return sum(int(r.get(name) or 0) for r in records)

    done, items_done = summed("mini_batches_done"), summed("items_done")
    started = min((float(r["started"]) for r in records if r.get("started")), default=None)
    updated = max((float(r["updated"]) for r in records if r.get("updated")), default=None)
    tasks_finished = sum(bool(r.get("finished")) for r in records)
    all_done = bool(records) and tasks_finished == len(records) and done >= total
    end = updated if all_done else (time.time() if now is None else now)
    elapsed = (end - started) if started is not None and end is not None else 0.0
    per_second = done / elapsed if elapsed > 0 else 0.0
    return RunProgress(
        mini_batches_total=total,
        mini_batches_done=done,
        mini_batches_failed=summed("mini_batches_failed"),
        mini_batches_retried=summed("mini_batches_retried"),
        items_total=header.get("items_total"),
        items_done=items_done,
        items_failed=summed("items_failed"),
        started=started,
        updated=updated,
        items_per_second=round(items_done / elapsed, 3) if elapsed > 0 else 0.0,
        mini_batches_per_second=round(per_second, 3),
        eta_seconds=round(max(total - done, 0) / per_second, 1) if done and per_second > 0 else None,
        finished=finished,
        tasks=len(records),
        tasks_finished=tasks_finished,
    )


def _finished(layout: RunLayout, header: dict[str, Any]) -> bool:
    """Tell whether the aggregate wrote this run's summary (the partition's says "running")."""
    try:
        summary = layout.output.read_json(layout.summary)
    except FileNotFoundError:
        return False
    return summary.get("status") != "running" and summary.get("run_key") == header.get("run_key")


def progress_line(
    done: int,
    total: int,
    items: int,
    failed: int,
    seconds: float,
    eta_seconds: float | None,
) -> str:
    """Return Azure's progress line for ``done`` of ``total`` mini-batches after ``seconds``.

    >>> print(progress_line(3, 10, 30, 1, 12.0, 28.0).replace(", rate", ",\\nrate"))
    Processed 3 of 10 mini batches (30 items, 1 failed) in 00:00:12,
    rate 2.5 items/s, estimated remaining time 00:00:28
    >>> progress_line(0, 10, 0, 0, 5.0, None).endswith("rate 0 items/s, estimated remaining time unknown")
    True
    """
    rate = items / seconds if seconds > 0 else 0.0
    remaining = clock(eta_seconds) if eta_seconds is not None else "unknown"
    return (
        f"Processed {done} of {total} mini batches ({items} items, {failed} failed) in {clock(seconds)}, "
        f"rate {rate:.3g} items/s, estimated remaining time {remaining}"
    )


def clock(seconds: float) -> str:
    """Return ``seconds`` as HH:MM:SS (hours grow past 99 rather than wrap).

    >>> clock(0), clock(3725.6), clock(400000)
    ('00:00:00', '01:02:06', '111:06:40')
    """
    whole = round(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def run_progress_line(progress: RunProgress, now: float | None = None) -> str:
    """Return Azure's progress line for the whole run, with how many mini-batches failed."""
    seconds = ((now or time.time()) - progress.started) if progress.started is not None else 0.0
    line = progress_line(
        progress.mini_batches_done,
        progress.mini_batches_total,
        progress.items_done,
        progress.items_failed,
        seconds,
        progress.eta_seconds,
    )
    return f"{line}; {progress.mini_batches_failed} mini batches failed, {progress.tasks} tasks started"


__all__ = [
    "RunProgress",
    "TaskProgress",
    "clock",
    "progress_line",
    "read_progress",
    "read_task_records",
    "run_progress_line",
    "sum_progress",
    "task_key",
]
