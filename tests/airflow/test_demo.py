"""``make demo``'s path: ``tools/demo.py`` runs the digits example through ``airflow dags test
--use-executor`` with Airflow's Execution API served beside it, so its run tasks run side by side.

Plain ``airflow dags test`` runs one task instance at a time, in one process: there, no two run
task instances overlap and the warm workers score one after the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(900)]


def _overlapping(intervals: list[tuple[float, float]]) -> int:
    """Count the intervals that start before an earlier-starting one has ended.

    >>> _overlapping([(0, 2), (2, 3), (5, 9), (6, 7), (6.5, 8)])
    2
    """
    count, latest_end = 0, float("-inf")
    for start, end in sorted(intervals):
        count += start < latest_end
        latest_end = max(latest_end, end)
    return count


def _run_task_intervals(run_id: str) -> list[tuple[float, float]]:
    """Return the start and end times of the run's run task instances, all of which succeeded."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == "parallelrun_digits",
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == "score.run",
            )
        ).all()
        assert tis and {ti.state for ti in tis} == {"success"}
        return [
            (ti.start_date.timestamp(), ti.end_date.timestamp())
            for ti in tis
            if ti.start_date and ti.end_date
        ]


def test_the_demo_runs_two_run_tasks_at_once_and_both_warm_workers_score(
    airflow_db: None, tmp_path: Path
) -> None:
    env = {**os.environ, "PARALLELRUN_EXAMPLES_DIR": str(tmp_path)}
    command = [sys.executable, str(REPO / "tools" / "demo.py"), "parallelrun_digits"]
    command += ["--conf", json.dumps({"data_dir": str(tmp_path)})]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=840)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "Execution API listens on http://127.0.0.1:" in result.stdout

    [run] = list((tmp_path / "out" / "digits").iterdir())
    summary = json.loads((run / "_parallelrun" / "summary.json").read_text())
    assert (summary["status"], summary["succeeded_mini_batches"]) == ("succeeded", 18)
    statuses = [json.loads(p.read_text()) for p in (run / "_parallelrun" / "status").glob("*.json")]
    assert len(statuses) == 18
    # Both warm workers of the run (process_count_per_node=2) scored at the same time: under plain
    # dags test both may score too, but one after the other.
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for status in statuses:
        by_worker.setdefault(status["worker_pid"], []).append((status["started"], status["ended"]))
    assert len(by_worker) == 2
    first, second = by_worker.values()
    assert any(a_start < b_end and b_start < a_end for a_start, a_end in first for b_start, b_end in second)
    # ... because run task instances ran at the same time.
    assert _overlapping(_run_task_intervals(run.name)) >= 1
