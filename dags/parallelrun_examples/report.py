"""Report on scoring runs from their asset events' metadata: counts, output URL, a row-count check.

Each ``SCORES`` event's extra (see ``asset_event_extra`` in the operator module) says how many items
the run scored; the report counts the rows of the merged output it names and checks the two agree.
Plain Python, no Airflow.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

COUNT_KEYS = (
    "total_mini_batches",
    "succeeded_mini_batches",
    "failed_mini_batches",
    "total_items",
    "succeeded_items",
    "failed_items",
)


def count_output_rows(url: str, fs: Any = None) -> int:
    """Return how many result rows a merged output holds: text lines, csv rows after the header, parquet rows.

    ``url`` is a local path or any fsspec URL, read with ``fs`` when given (a store's credentials);
    the file is streamed, never read whole.
    """
    import fsspec

    def opened() -> Any:
        return fs.open(url, "rb") if fs is not None else fsspec.open(url, "rb")

    if url.endswith(".parquet"):
        import pyarrow.parquet as pq

        with opened() as f:
            return int(pq.ParquetFile(f).metadata.num_rows)
    lines = 0
    with opened() as f:
        for _ in f:
            lines += 1
    return max(lines - 1, 0) if url.endswith(".csv") else lines


def report_entry(extra: Mapping[str, Any], *, source: str, fs: Any = None) -> dict[str, Any]:
    """Return one run's report entry: the event's metadata, the output's row count and whether they agree.

    ``fs`` reads the output (``count_output_rows``).

    >>> extra = {"run_id": "r1", "output": None, "status": "succeeded", "succeeded_items": 0}
    >>> report_entry(extra, source="d/r1")
    {'source': 'd/r1', 'run_id': 'r1', 'status': 'succeeded', 'output': None, 'summary': None,
     'total_mini_batches': None, 'succeeded_mini_batches': None, 'failed_mini_batches': None,
     'total_items': None, 'succeeded_items': 0, 'failed_items': None, 'output_rows': None,
     'rows_match': None}
    """
    output = extra.get("output")
    rows = count_output_rows(str(output), fs) if output else None
    succeeded = extra.get("succeeded_items")
    return {
        "source": source,
        "run_id": extra.get("run_id"),
        "status": extra.get("status"),
        "output": output,
        "summary": extra.get("summary"),
        **{key: extra.get(key) for key in COUNT_KEYS},
        "output_rows": rows,
        "rows_match": None if rows is None else rows == succeeded,
    }


def format_markdown(entries: Iterable[Mapping[str, Any]]) -> str:
    """Return the entries as a markdown table, one line per scoring run.

    >>> print(format_markdown([{"source": "d/r1", "status": "succeeded", "succeeded_items": 3,
    ...     "failed_items": 0, "succeeded_mini_batches": 2, "total_mini_batches": 2, "output_rows": 3,
    ...     "rows_match": True, "output": "/o.txt"}]))
    | run | status | items ok | items failed | mini-batches ok | output rows | rows match | output |
    |---|---|---|---|---|---|---|---|
    | d/r1 | succeeded | 3 | 0 | 2/2 | 3 | yes | /o.txt |
    """
    lines = [
        "| run | status | items ok | items failed | mini-batches ok | output rows | rows match | output |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        match = {True: "yes", False: "**NO**", None: "n/a"}[e["rows_match"]]
        lines.append(
            f"| {e['source']} | {e['status']} | {e['succeeded_items']} | {e['failed_items']} | "
            f"{e['succeeded_mini_batches']}/{e['total_mini_batches']} | {e['output_rows']} | {match} | "
            f"{e['output']} |"
        )
    return "\n".join(lines)


def write_report(folder: str | Path, name: str, entries: list[dict[str, Any]]) -> Path:
    """Write ``<folder>/<name>.json`` and ``<folder>/<name>.md``; return the JSON file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    path = folder / f"{safe}.json"
    for target, text in (
        (path, json.dumps({"runs": entries}, indent=2, default=str) + "\n"),
        (folder / f"{safe}.md", f"# Scoring report {name}\n\n{format_markdown(entries)}\n"),
    ):
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        partial.write_text(text)
        os.replace(partial, target)
    return path
