"""Workload (f): the fixed cost of a run, what every run pays whatever its size (issue 17).

``fixed cost = wall time - (seconds the workers spent in run()) / process count``, measured on one
tiny parquet file (100 rows of (a), (a)'s model and DAG). Under ``ours-scheduler`` the wall time is
broken down from the task instances' start and end (the REST API) and the summary's ``steps``:

- ``hop_before_partition_s``: the trigger to the partition task's start (scheduling, task start-up);
- ``partition_task_s`` (its ``partition_step_s``: ``steps.partition`` inside it);
- ``hop_before_run_s``: the partition task's end to the first run task's start;
- ``run_tasks_s``: the first run task's start to the last one's end (``run_task_overhead_s``: that
  minus the workers' ``run()`` time divided by the process count);
- ``hop_before_aggregate_s``: the last run task's end to the aggregate task's start;
- ``aggregate_task_s`` (its ``aggregate_step_s``: ``steps.aggregate`` inside it);
- ``hop_after_aggregate_s``: the aggregate task's end to the run's ``end_date``.

``python -m benchmarks.fixed_cost OUTPUT CONFIG_JSON`` re-runs the aggregate on a finished run's
output in a fresh process, as the aggregate task does, and prints how long each of its parts took:
the drawing of report.html, the merge, the progress records, the
summary.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

#: process_count_per_node x node_count of the benchmark's DAGs.
PROCESSES = 2
ROWS = 100
PARTS = (
    "hop_before_partition_s",
    "partition_task_s",
    "partition_step_s",
    "hop_before_run_s",
    "run_tasks_s",
    "run_task_overhead_s",
    "hop_before_aggregate_s",
    "aggregate_task_s",
    "aggregate_step_s",
    "hop_after_aggregate_s",
)
#: The contender that runs our DAG's shape with no-op tasks: Airflow's own floor.
FLOOR = "airflow-floor"
AGGREGATE_PARTS = ("report_html_s", "merge_s", "progress_records_s", "summary_s")


def make_input(tabular_input: Path, folder: Path) -> None:
    """Write (f)'s one file: the first ``ROWS`` rows of (a)'s first file (same columns, same model)."""
    import pyarrow.parquet as pq

    target = folder / "part-00000.parquet"
    if target.is_file():
        return
    first = sorted(tabular_input.glob("*.parquet"))[0]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".part-00000.parquet.tmp"
    pq.write_table(pq.read_table(first).slice(0, ROWS), tmp)
    tmp.replace(target)


def _ts(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _gap(after: float | None, before: float | None) -> float | None:
    return round(after - before, 3) if after is not None and before is not None else None


def breakdown(
    triggered: float, run_end: float | None, tis: list[dict[str, Any]], summary: dict[str, Any], run_s: float
) -> dict[str, Any]:
    """Return where a run's wall time went, from its task instances and its summary's ``steps``."""
    by_id = {t["task_id"].rsplit(".", 1)[-1]: t for t in tis if t["map_index"] == -1}
    runs = [t for t in tis if t["task_id"].endswith(".run")]
    part, agg = by_id.get("partition", {}), by_id.get("aggregate", {})
    p_start, p_end = _ts(part.get("start_date")), _ts(part.get("end_date"))
    a_start, a_end = _ts(agg.get("start_date")), _ts(agg.get("end_date"))
    r_starts = [s for t in runs if (s := _ts(t.get("start_date"))) is not None]
    r_ends = [e for t in runs if (e := _ts(t.get("end_date"))) is not None]
    r_start, r_end = (min(r_starts), max(r_ends)) if r_starts and r_ends else (None, None)
    steps = summary.get("steps") or {}
    run_tasks = _gap(r_end, r_start)
    return {
        "hop_before_partition_s": _gap(p_start, triggered),
        "partition_task_s": _gap(p_end, p_start),
        "partition_step_s": (steps.get("partition") or {}).get("seconds"),
        "hop_before_run_s": _gap(r_start, p_end),
        "run_tasks_s": run_tasks,
        "run_task_overhead_s": round(run_tasks - run_s / PROCESSES, 3) if run_tasks is not None else None,
        "hop_before_aggregate_s": _gap(a_start, r_end),
        "aggregate_task_s": _gap(a_end, a_start),
        "aggregate_step_s": (steps.get("aggregate") or {}).get("seconds"),
        "hop_after_aggregate_s": _gap(run_end, a_end),
    }


def fixed_cost(wall: float | None, run_s: float | None) -> float | None:
    """Return wall time minus the workers' ``run()`` time divided by the process count."""
    return round(wall - (run_s or 0.0) / PROCESSES, 3) if wall is not None else None


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return per contender of (f): the median fixed cost, each rep's, and the median of each part.

    With ``airflow-floor`` measured, each of ours has ``above_floor_s``: its median fixed cost minus
    the floor's, what our operator adds to Airflow's own cost of a three-step run.
    """
    out = []
    for contender in sorted({r["contender"] for r in results if r["workload"] == "f"}):
        rows = [r for r in results if r["workload"] == "f" and r["contender"] == contender and r.get("ok")]
        costs = [r["fixed_cost_s"] for r in rows if r.get("fixed_cost_s") is not None]

        def median(key: str, source: str, rows: list[dict[str, Any]] = rows) -> float | None:
            values = [v for r in rows if (v := (r.get(source) or {}).get(key)) is not None]
            return round(statistics.median(values), 3) if values else None

        out.append(
            {
                "contender": contender,
                "fixed_cost_s": round(statistics.median(costs), 3) if costs else None,
                "fixed_costs_s": costs,
                "parts": {k: median(k, "fixed_cost_parts") for k in PARTS},
                "aggregate_parts": {k: median(k, "aggregate_parts") for k in AGGREGATE_PARTS},
            }
        )
    floor = next((f["fixed_cost_s"] for f in out if f["contender"] == FLOOR), None)
    for f in out:
        if f["contender"].startswith("ours") and floor is not None and f["fixed_cost_s"] is not None:
            f["above_floor_s"] = round(f["fixed_cost_s"] - floor, 3)
    return out


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown_lines(fixed: list[dict[str, Any]]) -> list[str]:
    """Return (f)'s tables: the fixed cost per contender, then where it went, part by part (medians)."""
    if not fixed:
        return []
    lines = ["", "(f) fixed cost per run (wall - run() time / processes, one file of 100 rows):", ""]
    lines += ["| contender | fixed cost s, median (each rep) | above airflow-floor s |", "|---|--:|--:|"]
    for f in fixed:
        each = ", ".join(_num(c) for c in f["fixed_costs_s"])
        lines.append(
            f"| {f['contender']} | {_num(f['fixed_cost_s'])} ({each}) | {_num(f.get('above_floor_s'))} |"
        )
    # The floor last, and each other contender's difference to it after it.
    broken = sorted(
        (f for f in fixed if any(v is not None for v in f["parts"].values())),
        key=lambda f: f["contender"] == FLOOR,
    )
    if not broken:
        return lines
    floor = broken[-1] if broken[-1]["contender"] == FLOOR else None
    above = [f for f in broken if floor is not None and f is not floor]
    lines += [
        "",
        "Where the fixed cost went (s, medians; airflow-floor: the same DAG shape of no-op tasks, "
        "Airflow's own floor):",
        "",
        "| part | "
        + " | ".join([f["contender"] for f in broken] + [f"{f['contender']} - {FLOOR}" for f in above])
        + " |",
        "|---|" + "--:|" * (len(broken) + len(above)),
    ]
    for key in (*PARTS, *AGGREGATE_PARTS):
        values = [{**f["parts"], **f["aggregate_parts"]}.get(key) for f in broken]
        if all(v is None for v in values):
            continue
        if floor is not None:
            values += [_minus(f["parts"].get(key), floor["parts"].get(key)) for f in above]
        lines.append(f"| {key[:-2].replace('_', ' ')} | " + " | ".join(_num(v) for v in values) + " |")
    return lines


def _minus(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def _timed(module: Any, name: str, into: dict[str, float], key: str) -> None:
    """Wrap ``module.name`` so that the seconds it takes add up in ``into[key]``."""
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into[key] = round(into.get(key, 0.0) + time.perf_counter() - began, 3)

    setattr(module, name, wrapper)


def aggregate_parts(output: str, config_fields: dict[str, Any]) -> dict[str, float]:
    """Re-run the aggregate on ``output`` and return the seconds of each of its parts."""
    import importlib

    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.spec import RunSpec

    step = importlib.import_module("airflow_parallelrun.core.steps.aggregate")

    parts: dict[str, float] = {}
    _timed(step, "write_html_report", parts, "report_html_s")
    _timed(step, "_merge", parts, "merge_s")
    _timed(step, "step_times", parts, "progress_records_s")
    _timed(step, "build_summary", parts, "summary_s")
    config = ParallelRunConfig(entry_script="probe.py", **config_fields)
    spec = RunSpec(output_path=output, config=config, entry_script="", arguments=())
    began = time.perf_counter()
    step.aggregate(spec)
    parts["aggregate_s"] = round(time.perf_counter() - began, 3)
    return parts


if __name__ == "__main__":
    print(json.dumps(aggregate_parts(sys.argv[1], json.loads(sys.argv[2]))))
