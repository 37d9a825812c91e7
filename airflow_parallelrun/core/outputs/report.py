"""Write the run's summary and its per-mini-batch report."""

from __future__ import annotations

import csv
import io
import json
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
    "partition_key_value",
    # True when the input could not be read to count its items: the item columns then say 0, not known.
    "items_unknown",
)


def render_report(statuses: Iterable[BatchStatus]) -> bytes:
    """Return ``processed_mini_batches.csv``: one row per mini-batch, in mini-batch order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for s in statuses:
        row: dict[str, Any] = s.to_dict()
        row["inputs"] = ";".join(s.inputs)
        # The key group (partition_keys), as JSON: {"Store": 1, "Brand": "A"}; empty without keys.
        keys = s.partition_key_value
        row["partition_key_value"] = "" if keys is None else json.dumps(keys)
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
        f"items: {summary['failed_items']} failed of {summary['total_items']}{_unknown(summary)}.",
    ]
    if first_errors:
        lines.append("first errors:")
        lines += [
            f"  {s.id} ({';'.join(s.inputs)[:200]}): [{s.error_category}] {s.error_message[:500]}"
            for s in first_errors
        ]
    lines.append(f"details: {summary['report']}")
    return "\n".join(lines)


def _unknown(summary: dict[str, Any]) -> str:
    """Say how many mini-batches hold an unknown count of items, which the item counts leave out."""
    unknown = summary.get("mini_batches_with_unknown_items") or 0
    if not unknown:
        return ""
    batches = f"{unknown} mini-batch{'es' if unknown > 1 else ''}"
    return f", and the items of {batches} are unknown (their input could not be read to count them)"
