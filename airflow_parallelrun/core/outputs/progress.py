"""The progress of a run while it runs, read from the records in its storage.

PLACEHOLDER of the ui branch (issue 16): the progress branch owns this module and its version,
which sums the run tasks' own progress records, replaces this one at the merge. This one has
exactly the API of /work/notes/CONTRACT.md and computes the same figures from what exists
without that branch: the manifest and the mini-batches' status records.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.outputs.status import SKIPPED, BatchStatus
from airflow_parallelrun.core.storage.concurrent import READS_IN_FLIGHT, map_ahead

if TYPE_CHECKING:
    from airflow_parallelrun.core.storage.manifest import RunLayout


@dataclass(frozen=True)
class RunProgress:
    """The whole run's progress: how many mini-batches and items have finished, how fast, how long to go.

    ``mini_batches_done`` counts every finished mini-batch, failed ones included;
    ``items_total`` is None when the partition could not count the items; ``eta_seconds`` is
    None until a mini-batch has finished; ``finished`` says the aggregate wrote the run's summary.
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_progress(layout: RunLayout, *, now: float | None = None) -> RunProgress:
    """Return the progress of the run at ``layout``.

    Raises ``ParallelRunError`` when there is no manifest yet (the partition has not finished).
    """
    from airflow_parallelrun.core.storage.manifest import accepted_keys, read_manifest_header

    header = read_manifest_header(layout)
    if "items_total" not in header:
        header["items_total"] = _items_total(layout, header)
    keys = accepted_keys(header)
    statuses = [s for s in _read_statuses(layout) if s.run_key in keys]
    return sum_statuses(header, statuses, finished=_finished(layout, header), now=now)


def _items_total(layout: RunLayout, header: dict[str, Any]) -> int | None:
    """Return the items of every mini-batch of the manifest, None when one's count is unknown."""
    from airflow_parallelrun.core.storage.manifest import iter_mini_batches

    counts = [mb.items for mb in iter_mini_batches(layout, header)]
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def sum_statuses(
    header: dict[str, Any],
    statuses: list[BatchStatus],
    *,
    finished: bool = False,
    now: float | None = None,
) -> RunProgress:
    """Count finished mini-batches against the manifest's totals; rates since the manifest was written.

    >>> header = {"total_mini_batches": 4, "items_total": 40, "created_at": "1970-01-01T00:01:40+00:00"}
    >>> done = BatchStatus(id="mb-000000", index=0, status="succeeded", items_total=10)
    >>> p = sum_statuses(header, [done], now=110.0)
    >>> p.mini_batches_done, p.items_per_second, p.eta_seconds
    (1, 1.0, 30.0)
    >>> sum_statuses(header, [], now=110.0).eta_seconds is None
    True
    """
    total = int(header.get("total_mini_batches") or 0)
    done = len(statuses)
    items_done = sum(s.items_total for s in statuses)
    started = _epoch(header.get("created_at"))
    end = time.time() if now is None else now
    elapsed = end - started if started is not None else 0.0
    per_second = done / elapsed if elapsed > 0 else 0.0
    return RunProgress(
        mini_batches_total=total,
        mini_batches_done=done,
        mini_batches_failed=sum(not s.succeeded and s.status != SKIPPED for s in statuses),
        mini_batches_retried=sum(s.tries > 1 or s.task_try > 1 for s in statuses),
        items_total=header.get("items_total"),
        items_done=items_done,
        items_failed=sum(s.items_failed for s in statuses),
        started=started,
        updated=end,
        items_per_second=round(items_done / elapsed, 3) if elapsed > 0 else 0.0,
        mini_batches_per_second=round(per_second, 3),
        eta_seconds=round(max(total - done, 0) / per_second, 1) if done and per_second > 0 else None,
        finished=finished,
    )


def _read_statuses(layout: RunLayout) -> list[BatchStatus]:
    out = layout.output
    paths = [p for p in out.listdir(layout.state("status")) if p.endswith(".json")]

    def read(path: str) -> BatchStatus | None:
        try:
            return BatchStatus.from_dict(out.read_json(path))
        except (FileNotFoundError, ValueError):
            return None  # removed by a new partition meanwhile

    found = map_ahead(read, paths, 0 if out.is_local else READS_IN_FLIGHT)
    return [s for s in found if s is not None]


def _finished(layout: RunLayout, header: dict[str, Any]) -> bool:
    """Tell whether the aggregate wrote this run's summary."""
    try:
        summary = layout.output.read_json(layout.summary)
    except FileNotFoundError:
        return False
    return summary.get("status") != "running" and summary.get("run_key") == header.get("run_key")


def _epoch(stamp: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return None


__all__ = ["RunProgress", "read_progress", "sum_statuses"]
