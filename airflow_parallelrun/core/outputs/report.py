"""Write the run's summary and its per-mini-batch report."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from airflow_parallelrun.core.outputs.status import BatchStatus

REPORT_COLUMNS = (
    "id",
    "inputs",
    "status",
    "tries",
    "items_total",
    "items_succeeded",
    "items_failed",
    "items_returned",
    "seconds_total",
    "seconds_run",
    "error_category",
    "error_message",
)


def render_report(statuses: Iterable[BatchStatus]) -> bytes:
    """Return ``processed_mini_batches.csv``: one row per mini-batch, in mini-batch order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for s in statuses:
        row: dict[str, Any] = s.to_dict()
        row["inputs"] = ";".join(s.inputs)
        row["seconds_total"] = f"{s.seconds_total:.3f}"
        row["seconds_run"] = f"{s.seconds_run:.3f}"
        row["error_message"] = s.error_message.replace("\n", " ")[:2000]
        writer.writerow([row[c] for c in REPORT_COLUMNS])
    return buffer.getvalue().encode()


def failure_message(reasons: list[str], summary: dict[str, Any], first_errors: list[BatchStatus]) -> str:
    """Explain a failed run: the bounds exceeded, the counts, and the first errors."""
    lines = [
        "parallel run failed: " + "; ".join(reasons) + ".",
        f"mini-batches: {summary['failed_mini_batches']} failed of {summary['total_mini_batches']}; "
        f"items: {summary['failed_items']} failed of {summary['total_items']}.",
    ]
    if first_errors:
        lines.append("first errors:")
        lines += [
            f"  {s.id} ({';'.join(s.inputs)[:200]}): [{s.error_category}] {s.error_message[:500]}"
            for s in first_errors
        ]
    lines.append(f"details: {summary['report']}")
    return "\n".join(lines)
