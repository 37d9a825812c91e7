"""Run identity in real DAG runs: a second run at a path in use is refused; a failing aggregate says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow.conftest import task_instances

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SCRIPT = """
def run(mini_batch):
    return [open(p).read().strip() for p in mini_batch]
"""

# Two groups of one DAG run write to one output path; b partitions while a is still running.
TWO_RUNS_DAG = """
from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    config = ParallelRunConfig(entry_script="{script}", mini_batch_size="2", warm_workers=False)
    a = ParallelRunOperator(
        task_id="a",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}",
        config=config,
    )
    b = ParallelRunOperator(
        task_id="b",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}",
        config=config,
        retries=2,
        retry_delay=timedelta(seconds=0),
    )
    # a's run tasks wait for b's partition, whatever its outcome.
    gate = EmptyOperator(task_id="after_b_partitioned", trigger_rule="all_done")
    a.partition_task >> b.partition_task >> gate >> a.run_task
"""

# A task between the run tasks and the aggregate damages a part, as a failing storage might.
BROKEN_PART_DAG = """
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, task
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}",
        config=ParallelRunConfig(
            entry_script="{script}", mini_batch_size="2", append_row_format="parquet", warm_workers=False
        ),
        retries=2,
        retry_delay=timedelta(seconds=0),
    )

    @task
    def damage_a_part():
        part = sorted(Path("{output}", "_parallelrun", "parts").iterdir())[-1]
        part.write_bytes(b"not a parquet file")

    score.run_task >> damage_a_part() >> score.aggregate_task
"""


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"item{i}.txt").write_text(f"v{i}")
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    return folder, script


def _tries(dag_run, task_id: str) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, map_index=-1)
            .one()
        )
        return int(ti.try_number)


def test_a_second_run_at_an_output_path_in_use_is_refused_and_the_first_is_undisturbed(
    write_dag, tmp_path: Path, inputs
) -> None:
    folder, script = inputs
    out = tmp_path / "out"
    dag = write_dag(TWO_RUNS_DAG.format(dag_id="two_runs_one_path", input=folder, output=out, script=script))
    dag_run = dag.test()

    states = task_instances(dag_run)
    assert states[("b.partition", -1)][0] == "failed"
    assert states[("a.aggregate", -1)][0] == "success"
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["owner"]["task_id"] == "a.partition"
    assert (out / "parallel_run_step.txt").read_text().splitlines() == ["v0", "v1", "v2", "v3"]
    # Refused at once, not retried: the owner's DAG run is running.
    assert _tries(dag_run, "b.partition") == 1


def test_a_failing_aggregate_writes_a_failed_summary_and_is_not_retried(
    write_dag, tmp_path: Path, inputs
) -> None:
    folder, script = inputs
    out = tmp_path / "out"
    dag = write_dag(BROKEN_PART_DAG.format(dag_id="broken_part", input=folder, output=out, script=script))
    dag_run = dag.test()

    assert task_instances(dag_run)[("score.aggregate", -1)][0] == "failed"
    assert _tries(dag_run, "score.aggregate") == 1
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["step"] == "aggregate" and summary["error"]


ONE_RUN_DAG = """
from datetime import timedelta

from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", warm_workers=False),
        retries=2,
        retry_delay=timedelta(seconds=0),
    )
"""


def test_a_path_left_unfinished_by_a_dag_run_that_no_longer_exists_is_taken_over(
    write_dag, tmp_path: Path, inputs
) -> None:
    from airflow_parallelrun.core import steps
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.inputs.datasets import FileDataset
    from airflow_parallelrun.core.spec import RunSpec

    folder, script = inputs
    out = tmp_path / "out"
    # A run whose DAG run was deleted while it ran: its manifest stays, its summary says "running".
    gone = {"dag_id": "deleted_dag", "run_id": "manual__deleted", "task_id": "score.partition"}
    spec = RunSpec(
        output_path=str(out),
        config=ParallelRunConfig(entry_script=str(script), mini_batch_size="2"),
        entry_script=str(script),
    )
    steps.partition(
        FileDataset(path=str(folder), pattern="*.txt"), spec, owner=gone, is_active=lambda o: True
    )
    assert json.loads((out / "_parallelrun" / "summary.json").read_text())["status"] == "running"

    dag = write_dag(
        ONE_RUN_DAG.format(dag_id="takes_over_a_gone_run", input=folder, output=out, script=script)
    )
    dag_run = dag.test()

    assert task_instances(dag_run)[("score.aggregate", -1)][0] == "success"
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["owner"]["dag_id"] == "takes_over_a_gone_run"
