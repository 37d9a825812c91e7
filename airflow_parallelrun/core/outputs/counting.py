"""Count items and mini-batches: of one mini-batch, of a finished run, and early, for the abort check.

One rule set for every count the engine reports. A mini-batch's items follow Azure's rule (the
shortfall of what ``run()`` returned failed, see :func:`count_items`). A run counts a mini-batch
as failed when it failed or never ran; a skipped one (the run was aborted) is neither failed
nor succeeded. The thresholds (``thresholds.py``) are checked against a :class:`RunCounts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_parallelrun.core.outputs.status import FAILED, NOT_RUN, SKIPPED, SUCCEEDED, BatchStatus


@dataclass(frozen=True)
class RunCounts:
    """What the thresholds are checked against."""

    total_mini_batches: int
    failed_mini_batches: int
    total_items: int
    failed_items: int

    @property
    def failed_percent(self) -> float:
        if not self.total_mini_batches:
            return 0.0
        return 100.0 * self.failed_mini_batches / self.total_mini_batches


def count_items(total: int | None, returned: int) -> tuple[int, int, int]:
    """Return ``(total, succeeded, failed)`` items under Azure's rule: the shortfall failed.

    ``run()`` returning more items than it was given counts every input as succeeded; the extra
    rows are kept in the output.

    >>> count_items(10, 7)
    (10, 7, 3)
    >>> count_items(10, 12)
    (10, 10, 0)
    >>> count_items(None, 4)
    (4, 4, 0)
    """
    if total is None:
        return returned, returned, 0
    succeeded = min(total, returned)
    return total, succeeded, total - succeeded


def failed(statuses: Iterable[BatchStatus]) -> list[BatchStatus]:
    """Return the mini-batches a run counts as failed: those that failed and those never run."""
    return [s for s in statuses if s.status in (FAILED, NOT_RUN)]


def count_run(statuses: Sequence[BatchStatus]) -> RunCounts:
    """Count a finished run from the status of every one of its mini-batches."""
    return RunCounts(
        total_mini_batches=len(statuses),
        failed_mini_batches=len(failed(statuses)),
        total_items=sum(s.items_total for s in statuses),
        failed_items=sum(s.items_failed for s in statuses),
    )


def count_dead_letters(total_mini_batches: int, records: Iterable[dict[str, Any]]) -> RunCounts:
    """Count a run still running from its dead letters alone, cheaply, for the abort check.

    Its total of items is not known yet (0); every dead letter that does not say succeeded is a
    failed mini-batch, and its ``items_failed`` are failed items.
    """
    records = list(records)
    return RunCounts(
        total_mini_batches=total_mini_batches,
        failed_mini_batches=sum(r.get("status") != SUCCEEDED for r in records),
        total_items=0,
        failed_items=sum(int(r.get("items_failed") or 0) for r in records),
    )


def tally(statuses: Sequence[BatchStatus], run_id: str | None, run_key: str | None) -> dict[str, int]:
    """Return the counts a run's summary reports, of mini-batches and of items.

    A reused mini-batch succeeded in a run this one resumed (in a legacy manifest without keys:
    in another DAG run). Failed mini-batches whose input could not be read to count it have
    unknown items, in none of the item counts.
    """
    counts = count_run(statuses)
    skipped = [s for s in statuses if s.status == SKIPPED]
    return {
        "total_mini_batches": counts.total_mini_batches,
        "succeeded_mini_batches": sum(s.succeeded for s in statuses),
        "failed_mini_batches": counts.failed_mini_batches,
        "skipped_mini_batches": len(skipped),
        "reused_mini_batches": sum(
            s.succeeded and (s.run_key != run_key if run_key else run_id is not None and s.run_id != run_id)
            for s in statuses
        ),
        "total_items": counts.total_items,
        "succeeded_items": sum(s.items_succeeded for s in statuses),
        "failed_items": counts.failed_items,
        "skipped_items": sum(s.items_total for s in skipped),
        "returned_items": sum(s.items_returned for s in statuses),
        "mini_batches_with_unknown_items": sum(s.items_unknown for s in statuses),
    }
