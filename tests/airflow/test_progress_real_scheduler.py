"""Progress under a real scheduler: the records, the log lines in the task logs, the step times, the watchdog.

One real Airflow (scheduler, dag-processor, api-server, triggerer; LocalExecutor) runs two DAGs: one
that scores slowly enough for several progress log lines, and one whose entry script hangs, which
``progress_update_timeout`` must fail long before ``run_invocation_timeout``.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.real_airflow import RealAirflow, running_airflow

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1200)]

SLOW_SCRIPT = """
import os, time

def run(mini_batch):
    time.sleep(1.5)
    return [os.path.basename(p) for p in mini_batch]
"""

HANGING_SCRIPT = """
import time

def run(mini_batch):
    print("run() starts and will hang", flush=True)
    time.sleep(3600)
    return list(mini_batch)
"""

DAG = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="1", mini_batches_per_task=3,
                                 process_count_per_node=2, run_max_try=1, {extra}),
    )
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAirflow]:
    yield from running_airflow(tmp_path_factory.mktemp("progress-airflow"))


def _setup(airflow: RealAirflow, tmp_path: Path, dag_id: str, script: str, extra: str) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        (folder / f"item{i}.txt").write_text(f"v{i}")
    (tmp_path / "score.py").write_text(textwrap.dedent(script))
    source = DAG.format(
        dag_id=dag_id, input=folder, output=tmp_path / "out", script=tmp_path / "score.py", extra=extra
    )
    airflow.add_dag(dag_id, source)
    airflow.wait_for_dag(dag_id)
    return tmp_path / "out"


def _task_log(airflow: RealAirflow, dag_id: str, task_id: str) -> str:
    """Return the text of every log of ``task_id`` in ``dag_id`` (all map indexes and tries)."""
    files = sorted((airflow.home / "logs" / f"dag_id={dag_id}").glob(f"**/task_id={task_id}/**/*.log"))
    return "\n".join(f.read_text() for f in files)


def test_run_tasks_keep_records_log_progress_lines_and_the_summary_has_step_times(
    airflow: RealAirflow, tmp_path: Path
) -> None:
    out = _setup(airflow, tmp_path, "progress_lines", SLOW_SCRIPT, "progress_log_interval=1")
    run_id = airflow.trigger("progress_lines")
    assert airflow.wait_for_run("progress_lines", run_id, timeout=600) == "success"
    state = out / run_id / "_parallelrun"

    records = {p.stem: json.loads(p.read_text()) for p in sorted((state / "progress").glob("*.json"))}
    assert set(records) == {"task-000000", "task-000001"}
    for record in records.values():
        assert record["finished"] and record["running"] == []
        assert (record["mini_batches_total"], record["mini_batches_done"], record["items_done"]) == (3, 3, 3)

    log = _task_log(airflow, "progress_lines", "score.run")
    assert "task-000000: Processed 3 of 3 mini batches (3 items, 0 failed)" in log
    assert "task-000001: Processed 3 of 3 mini batches (3 items, 0 failed)" in log
    assert "task-000000: Processed 1 of 3 mini batches (1 items, 0 failed)" in log  # a line while running
    assert "whole run: Processed " in log and " of 6 mini batches" in log
    assert "estimated remaining time" in log

    summary = json.loads((state / "summary.json").read_text())
    steps = summary["steps"]
    partition, run, aggregate = steps["partition"], steps["run"], steps["aggregate"]
    assert partition["ended"] <= run["started"] < run["ended"] <= aggregate["started"] < aggregate["ended"]
    assert run["seconds"] >= 3 * 1.5  # each task scored 3 mini-batches of 1.5 s
    gaps = (run["started"] - partition["ended"]) + (aggregate["started"] - run["ended"])
    assert steps["airflow_overhead_seconds"] == pytest.approx(gaps, abs=0.01)
    assert steps["airflow_overhead_seconds"] > 0  # task start-up is never free
    # score.output, the aggregate's XCom, is the summary: the same counts, and the steps besides.
    path = (
        f"/api/v2/dags/progress_lines/dagRuns/{run_id}/taskInstances/score.aggregate/xcomEntries/return_value"
    )
    xcom = airflow.api("GET", path, params={"deserialize": "true"}).json()["value"]
    xcom = json.loads(xcom) if isinstance(xcom, str) else xcom

    assert xcom["steps"] == steps and xcom["total_items"] == summary["total_items"] == 6


def test_a_hanging_script_fails_at_progress_update_timeout_not_at_run_invocation_timeout(
    airflow: RealAirflow, tmp_path: Path
) -> None:
    extra = "run_invocation_timeout=900, progress_update_timeout=5, error_threshold=0"
    out = _setup(airflow, tmp_path, "progress_stuck", HANGING_SCRIPT, extra)
    started = time.monotonic()
    run_id = airflow.trigger("progress_stuck")
    assert airflow.wait_for_run("progress_stuck", run_id, timeout=600) == "failed"
    assert time.monotonic() - started < 600  # run_invocation_timeout (900 s) never came into play

    tis = {
        (t["task_id"], t["map_index"]): t["state"] for t in airflow.task_instances("progress_stuck", run_id)
    }
    assert tis[("score.run", 0)] == tis[("score.run", 1)] == "failed"
    log = _task_log(airflow, "progress_stuck", "score.run")
    assert "more than progress_update_timeout=5s, while mini-batch mb-000000 was running" in log
    assert "raise progress_update_timeout" in log and "ProgressTimeout" in log
    status = json.loads((out / run_id / "_parallelrun" / "status" / "mb-000000.json").read_text())
    assert (status["status"], status["error_category"]) == ("failed", "progress_timeout")
