"""Build a run's summary: its counts, its bounds, where its outputs are, and its first errors.

The aggregate step writes it as ``_parallelrun/summary.json`` and returns it (through XCom);
``failed_summary`` is what it writes instead when it could not finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.outputs.counting import failed, tally
from airflow_parallelrun.core.outputs.status import BatchStatus

if TYPE_CHECKING:
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.storage.manifest import RunLayout

#: How many failed mini-batches the summary (and the failure message) show.
FIRST_ERRORS = 5


def build_summary(
    statuses: Sequence[BatchStatus],
    *,
    layout: RunLayout,
    config: ParallelRunConfig,
    header: dict[str, Any],
    run: tuple[str | None, str | None],
    reasons: list[str],
    aborted: str | None,
    merged_url: str | None,
) -> dict[str, Any]:
    """Return the summary of a run whose every mini-batch has a status.

    ``run`` is ``(run_id, run_key)``; ``reasons`` the bounds exceeded (empty: succeeded);
    ``aborted`` why the run was aborted, if it was.
    """
    out = layout.output
    run_id, run_key = run
    counts = tally(statuses, run_id, run_key)
    return {
        "status": "failed" if reasons else "succeeded",
        "run_id": run_id,
        "run_key": run_key,
        "owner": header.get("owner"),
        **counts,
        "output": merged_url,
        "output_action": config.output_action,
        "thresholds": config.thresholds(),
        "thresholds_exceeded": reasons,
        "aborted": {"reason": aborted} if aborted and counts["skipped_mini_batches"] else None,
        **_input_facts(header),
        "run_seconds": round(sum(s.seconds_run for s in statuses), 3),
        "summary": out.url_of(layout.summary),
        "report": out.url_of(layout.report),
        "errors": out.url_of(layout.errors),
        "first_errors": [
            {"id": s.id, "inputs": s.inputs, "category": s.error_category, "message": s.error_message}
            for s in first_errors(statuses)
        ],
        "retried_mini_batches": retried(statuses),
    }


def retried(statuses: Sequence[BatchStatus]) -> list[dict[str, Any]]:
    """Return the mini-batches that took more than one try: of ``run()``, or of their Airflow task.

    ``task_try`` above 1 means Airflow ran the task again (a retry after its worker died, or a
    clear) and this mini-batch ran in that later try; ``tries`` counts its ``run()`` tries there.
    """
    return [
        {"id": s.id, "inputs": s.inputs, "status": s.status, "task_try": s.task_try, "tries": s.tries}
        for s in statuses
        if s.task_try > 1 or s.tries > 1
    ]


def first_errors(statuses: Sequence[BatchStatus]) -> list[BatchStatus]:
    """Return the first ``FIRST_ERRORS`` mini-batches the run counts as failed, in order."""
    return failed(statuses)[:FIRST_ERRORS]


def _input_facts(header: dict[str, Any]) -> dict[str, Any]:
    """Return what the partition step found of the input, from the manifest header."""
    return {
        "input": header.get("input"),
        "input_files": header.get("input_files"),
        "refused_inputs": header.get("refused_inputs", []),
        "duplicate_inputs_dropped": header.get("duplicate_inputs_dropped", []),
        "resumed_from_earlier_run": bool(header.get("resumed")),
        "resume_note": header.get("resume_note", ""),
        "note": header.get("note", ""),
        "mini_batch_size": header.get("mini_batch_size"),
    }


def failed_summary(
    layout: RunLayout, header: dict[str, Any], run: tuple[str | None, str | None], error: str
) -> dict[str, Any]:
    """Return the summary of a run whose aggregate step failed with ``error``."""
    run_id, run_key = run
    return {
        "status": "failed",
        "run_id": run_id,
        "run_key": run_key,
        "owner": header.get("owner"),
        "step": "aggregate",
        "error": error,
        "finished_at": datetime.now(UTC).isoformat(),
        "summary": layout.output.url_of(layout.summary),
    }
