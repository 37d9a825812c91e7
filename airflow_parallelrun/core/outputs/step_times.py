"""Where a run's time went: the wall time of each step, and Airflow's time between them.

The summary's ``"steps"``: ``partition`` from the manifest (its start, and the moment its header
was written), ``run`` from the run tasks' progress records (the first one's start to the last
one's end), ``aggregate`` from the aggregate step itself. ``airflow_overhead_seconds`` is the
time between them: from the manifest to the first run task's start, and from the last run
task's end to the aggregate's start (scheduling, task start-up, queueing in a pool).
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from typing import Any


def span(started: float | None, ended: float | None) -> dict[str, Any] | None:
    """Return a step's ``{"started", "ended", "seconds"}`` (epoch seconds), or None if either is unknown.

    >>> span(100.0, 102.5)
    {'started': 100.0, 'ended': 102.5, 'seconds': 2.5}
    >>> span(None, 3.0) is None
    True
    """
    if started is None or ended is None:
        return None
    return {"started": round(started, 3), "ended": round(ended, 3), "seconds": round(ended - started, 3)}


def step_times(
    header: dict[str, Any], aggregate_started: float, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return the summary's ``"steps"``; the aggregate ends now. A step not recorded is None.

    ``records`` are the run tasks' progress records of the run (``read_task_records``).
    """
    created = header.get("created_at")
    partition = span(
        header.get("partition_started"), datetime.fromisoformat(created).timestamp() if created else None
    )
    run = span(
        min((float(r["started"]) for r in records), default=None),
        max((float(r["updated"]) for r in records), default=None),
    )
    aggregate = span(aggregate_started, time.time())
    return {
        "partition": partition,
        "run": run,
        "aggregate": aggregate,
        "airflow_overhead_seconds": overhead(partition, run, aggregate),
    }


def aggregate_ended(steps: dict[str, Any], aggregate_started: float) -> dict[str, Any]:
    """Return ``steps`` with the aggregate ending now (it went on after ``step_times``)."""
    aggregate = span(aggregate_started, time.time())
    return {
        **steps,
        "aggregate": aggregate,
        "airflow_overhead_seconds": overhead(steps["partition"], steps["run"], aggregate),
    }


def overhead(
    partition: dict[str, Any] | None, run: dict[str, Any] | None, aggregate: dict[str, Any] | None
) -> float | None:
    """Return the time between the steps (never below 0: clocks of nodes may differ a little).

    >>> p, r, a = span(0.0, 2.0), span(5.0, 9.0), span(10.5, 11.0)
    >>> overhead(p, r, a), overhead(p, None, a), overhead(None, r, a)
    (4.5, 8.5, None)
    """
    if partition is None or aggregate is None:
        return None
    steps = [s for s in (partition, run, aggregate) if s is not None]
    gaps = (max(after["started"] - before["ended"], 0.0) for before, after in itertools.pairwise(steps))
    return round(sum(gaps), 3)


__all__ = ["overhead", "span", "step_times"]
