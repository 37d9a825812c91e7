"""The status a mini-batch gets from its tries: succeeded or failed, and its items counted."""

from __future__ import annotations

from airflow_parallelrun.core.execution.runner import TryResult
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.inputs.reading import count_piece_items
from airflow_parallelrun.core.outputs.counting import count_items
from airflow_parallelrun.core.outputs.status import FAILED, SUCCEEDED, BatchStatus


def status_of_tries(mb: MiniBatch, result: TryResult, tries: int, run_id: str | None) -> BatchStatus:
    """Return the status of ``mb`` after its last try: items counted as Azure counts them.

    A try that succeeded counts what ``run()`` returned against the items it was given (rows the
    worker rejected while reading count as failed); a mini-batch that failed every try counts all
    its items as failed, from what the worker read or else from the input's own size.
    """
    given: int | None = None
    counted: int | None = None
    if result.ok:
        total_read = result.items if result.items is not None else mb.items
        # Rows the worker rejected while reading never reached run(): failed, whatever it returned.
        given = None if total_read is None else total_read - result.rejected
        given, succeeded, failed = count_items(given, result.returned)
        total, failed = given + result.rejected, failed + result.rejected
    else:
        counted = result.items if result.items is not None else count_piece_items(mb)
        total = succeeded = failed = 0
        if counted is not None:
            total = failed = counted
    status = BatchStatus(
        id=mb.id,
        index=mb.index,
        status=SUCCEEDED if result.ok else FAILED,
        inputs=mb.inputs,
        tries=tries,
        items_total=total,
        items_succeeded=succeeded,
        items_failed=failed,
        items_returned=result.returned if result.ok else 0,
        seconds_run=round(result.run_seconds, 6),
        error_category=result.category,
        error_message=result.message,
        error_traceback=result.traceback,
        run_id=run_id,
        items_unknown=not result.ok and counted is None,
        partition_key_value=mb.partition_key_value,
    )
    if result.ok and failed:
        shortfall = failed - result.rejected
        notes = [result.message] if result.rejected else []
        if shortfall:
            notes.append(
                f"run() returned {result.returned} results for {given} items; "
                f"{shortfall} items count as failed"
            )
        status.error_category = "rejected_rows" if result.rejected else "shortfall"
        status.error_message = "; ".join(notes)
    return status
