"""(f)'s figures: ours against Airflow's own floor, part by part, from the harness's raw results.

The harness itself runs in tests/test_benchmarks.py (slow, real Airflow); these check, on results
shaped as it records them, what the report makes of the ``airflow-floor`` contender.
"""

from __future__ import annotations

from typing import Any

from benchmarks import fixed_cost
from benchmarks.report import render_markdown, summarize

HOPS = ("hop_before_partition_s", "hop_before_run_s", "hop_before_aggregate_s", "hop_after_aggregate_s")


def result(contender: str, rep: int, wall: float, parts: dict[str, float] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "workload": "f",
        "job": "f",
        "contender": contender,
        "rep": rep,
        "mini_batches": 1,
        "items": 100,
        "ok": True,
        "wall_s": wall,
        "fixed_cost_s": wall,
    }
    if parts is not None:
        row["fixed_cost_parts"] = {k: parts.get(k) for k in fixed_cost.PARTS}
    if contender != "airflow-floor":  # the floor computes nothing: no digest
        row["digest"] = {"rows": 100, "sha256": "same"}
    return row


def record() -> dict[str, Any]:
    ours = {**dict.fromkeys(HOPS, 1.0), "partition_task_s": 2.0, "run_tasks_s": 3.0, "aggregate_task_s": 2.5}
    floor = {
        **dict.fromkeys(HOPS, 0.75),
        "partition_task_s": 0.5,
        "run_tasks_s": 0.5,
        "aggregate_task_s": 0.5,
    }
    results = [
        *(result("ours-scheduler", rep, wall, ours) for rep, wall in ((1, 11.0), (2, 12.0), (3, 13.0))),
        *(result("airflow-floor", rep, wall, floor) for rep, wall in ((1, 4.0), (2, 4.5), (3, 6.0))),
        *(result("process-pool", rep, 1.0, None) for rep in (1, 2, 3)),
    ]
    return {
        "results": results,
        "scaling": [],
        "contenders": ["ours-scheduler", "airflow-floor", "process-pool"],
        "machine": {
            "cpu_count": 2,
            "cpu_model": "test",
            "ram_gb": 1,
            "python": "3.11",
            "versions": {},
            "git_commit": None,
            "load_average_at_start": None,
            "time": "now",
        },
        "command": "python -m benchmarks --workloads f",
        "seconds": 1.0,
        "size": "tiny",
        "size_parameters": {},
        "reps": 3,
        "airflow_settings": {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2"},
    }


def test_ours_above_the_floor_is_the_difference_of_the_medians() -> None:
    fixed = {f["contender"]: f for f in summarize(record())["fixed_cost"]}
    assert fixed["airflow-floor"]["fixed_cost_s"] == 4.5
    assert fixed["ours-scheduler"]["above_floor_s"] == 12.0 - 4.5
    # Only ours is measured against the floor; the floor and the pool have no such figure.
    assert "above_floor_s" not in fixed["airflow-floor"] and "above_floor_s" not in fixed["process-pool"]


def test_the_floor_has_no_output_to_compare_and_the_table_shows_it_beside_ours() -> None:
    rec = record()
    rec["summary"] = summarize(rec)
    (floor,) = [f for f in rec["summary"]["main"] if f["contender"] == "airflow-floor"]
    assert floor["same_output_as_baseline"] is None  # not "different": it computes nothing
    markdown = render_markdown(rec)
    assert "`AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.2`" in markdown
    assert "| ours-scheduler | 12.00 (11.00, 12.00, 13.00) | 7.50 |" in markdown
    # Part by part: ours, the floor, and ours minus the floor; a step the floor has not is "-".
    assert "| part | ours-scheduler | airflow-floor | ours-scheduler - airflow-floor |" in markdown
    assert "| run tasks | 3.00 | 0.50 | 2.50 |" in markdown
    assert "| hop before run | 1.00 | 0.75 | 0.25 |" in markdown
    assert "| partition step |" not in markdown  # no contender measured it


def test_the_floor_dag_limits_its_run_tasks_as_ours_does() -> None:
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.operators.parallel_run import max_active_run_tasks
    from benchmarks import airflow_floor

    # The benchmark DAGs' configuration: one node of two processes, warm workers on (the default).
    ours = max_active_run_tasks(
        ParallelRunConfig(entry_script="x.py", node_count=1, process_count_per_node=2)
    )
    assert ours == airflow_floor.MAX_ACTIVE_RUN_TASKS
    assert f"max_active_tis_per_dagrun={ours})" in airflow_floor.DAG_SOURCE
