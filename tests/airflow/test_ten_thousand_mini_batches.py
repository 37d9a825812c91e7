"""10,000 mini-batches on Airflow's default max_map_length (1024), with per-mini-batch accounting.

``mini_batches_per_task=1`` asks for a task instance per mini-batch, so Airflow's limit is what packs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.airflow.conftest import task_instances

# About 1024 task instances run one after another under dag.test(): minutes, not seconds.
pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1800)]

TOTAL = 10_000


def test_ten_thousand_mini_batches_run_without_changing_airflows_configuration(
    write_dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW__CORE__MAX_MAP_LENGTH", raising=False)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(TOTAL):
        (folder / f"{i:05d}.txt").write_text(str(i))
    script = tmp_path / "score.py"
    # run() fails for one file, so accounting must stay per mini-batch inside a pack.
    script.write_text(
        "import os\n"
        "def run(mini_batch):\n"
        "    if any(p.endswith('04321.txt') for p in mini_batch):\n"
        "        raise ValueError('bad item 4321')\n"
        "    return [open(p).read() for p in mini_batch]\n"
    )
    out = tmp_path / "out"
    dag = write_dag(
        f"""
        from airflow.sdk import DAG
        from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

        with DAG("ten_thousand", schedule=None) as dag:
            ParallelRunOperator(
                task_id="score",
                inputs=FileDataset(path="{folder}", pattern="*.txt"),
                output_path="{out}",
                config=ParallelRunConfig(entry_script="{script}", mini_batch_size="1", run_max_try=1,
                                         error_threshold=1, process_count_per_node=2,
                                         mini_batches_per_task=1),
            )
        """
    )
    dag_run = dag.test()
    assert dag_run.state == "success"
    runs = [key for key in task_instances(dag_run) if key[0] == "score.run"]
    assert len(runs) <= 1024
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["total_mini_batches"] == TOTAL
    assert (summary["failed_mini_batches"], summary["failed_items"], summary["succeeded_items"]) == (
        1,
        1,
        TOTAL - 1,
    )
    with open(out / "_parallelrun" / "processed_mini_batches.csv") as f:
        report = list(csv.DictReader(f))
    assert len(report) == TOTAL
    assert report[4321]["status"] == "failed" and report[4320]["status"] == "succeeded"
    assert {r["tries"] for r in report} == {"1"}
    lines = (out / "parallel_run_step.txt").read_text().split()
    assert lines == [str(i) for i in range(TOTAL) if i != 4321]
