"""report.html and the resource samples of a real DAG run (``dag.test()``), with warm workers and without."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.airflow.conftest import task_instances
from tests.airflow.test_warm_workers import DAG_SOURCE as WARM_DAG_SOURCE

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SCRIPT = """
import os, time

def run(mini_batch):
    time.sleep(0.4)
    return [os.path.basename(p) for p in mini_batch]
"""

# The warm-workers test's DAG, sampling every 0.2 s.
DAG_SOURCE = WARM_DAG_SOURCE.replace(
    "mini_batches_per_task=1)", "mini_batches_per_task=1, resource_monitor_interval=0.2)"
)
assert DAG_SOURCE != WARM_DAG_SOURCE


@pytest.mark.parametrize("warm", [True, False])
def test_a_dag_run_writes_its_report_and_the_samples_of_the_workers_that_ran(
    write_dag, tmp_path: Path, warm: bool
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"item{i}.txt").write_text(str(i))
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    dag_id = f"report_{warm}_{tmp_path.name}"
    dag = write_dag(
        DAG_SOURCE.format(dag_id=dag_id, input=folder, output=tmp_path / "out", script=script, warm=warm)
    )
    dag_run = dag.test()
    assert {state for state, _ in task_instances(dag_run).values()} == {"success"}
    state = tmp_path / "out" / dag_run.run_id / "_parallelrun"
    summary = json.loads((state / "summary.json").read_text())
    assert summary["report_html"] == str(state / "report.html")
    page = (state / "report.html").read_text()
    assert f"<td>total_mini_batches</td><td class=n>{summary['total_mini_batches']}</td>" in page
    assert "<script" not in page and page.count("<svg") == 4

    statuses = [json.loads(p.read_text()) for p in sorted((state / "status").glob("*.json"))]
    ran = {s["worker_pid"] for s in statuses}
    files = sorted((state / "perf").glob("*/*.csv"))
    sampled = set()
    for path in files:
        with open(path, newline="") as f:
            sampled |= {int(r["pid"]) for r in csv.DictReader(f) if r["role"] == "worker"}
    assert None not in ran and ran <= sampled
    if warm:  # one pool, one worker for the four task instances
        assert len(files) == 1 and len(ran) == 1
    else:  # each task instance sampled the worker it started
        assert sorted(p.name for p in files) == [f"task-mb-00000{i}-try1.csv" for i in range(4)]
        assert len(ran) == 4
