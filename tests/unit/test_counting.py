"""The counting rules of a run live in one module (core/outputs/counting.py)."""

from __future__ import annotations

from airflow_parallelrun.core.outputs import counting, thresholds
from airflow_parallelrun.core.outputs.counting import RunCounts, count_dead_letters, count_run, tally
from airflow_parallelrun.core.outputs.status import FAILED, NOT_RUN, SKIPPED, SUCCEEDED, BatchStatus
from airflow_parallelrun.core.outputs.summary import FIRST_ERRORS, first_errors


def _status(i: int, status: str, total: int, failed: int = 0, **kw: object) -> BatchStatus:
    return BatchStatus(
        id=f"mb-{i:06d}",
        index=i,
        status=status,
        items_total=total,
        items_failed=failed,
        items_succeeded=total - failed,
        **kw,  # type: ignore[arg-type]
    )


STATUSES = [
    _status(0, SUCCEEDED, 10, items_returned=12, run_key="old"),
    _status(1, FAILED, 5, 5, run_key="new"),
    _status(2, NOT_RUN, 4, 4, run_key="new"),
    _status(3, SKIPPED, 3, 0, run_key="new"),
    _status(4, SUCCEEDED, 2, 1, run_key="new", items_unknown=False),
]


def test_a_run_counts_failed_and_never_run_mini_batches_as_failed_and_skipped_ones_as_neither():
    assert count_run(STATUSES) == RunCounts(
        total_mini_batches=5, failed_mini_batches=2, total_items=24, failed_items=10
    )
    assert [s.index for s in counting.failed(STATUSES)] == [1, 2]


def test_the_summary_counts_come_from_one_tally():
    counts = tally(STATUSES, run_id=None, run_key="new")
    assert counts["succeeded_mini_batches"] == 2 and counts["skipped_mini_batches"] == 1
    assert counts["reused_mini_batches"] == 1  # succeeded under the resumed run's key
    assert counts["skipped_items"] == 3 and counts["returned_items"] == 12
    assert counts["total_items"] == 24 and counts["failed_items"] == 10


def test_the_abort_check_counts_dead_letters_with_the_same_rules():
    records = [{"status": FAILED, "items_failed": 3}, {"status": SUCCEEDED, "items_failed": 1}, {}]
    assert count_dead_letters(7, records) == RunCounts(7, 2, 0, 4)


def test_thresholds_check_the_counts_of_the_counting_module():
    assert thresholds.RunCounts is RunCounts
    assert [s.index for s in first_errors(STATUSES * 3)] == [1, 2, 1, 2, 1][:FIRST_ERRORS]
