"""Failed mini-batches in a real DAG run: counted, reported, and failing the run only past a bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow.conftest import task_instances

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

# Items whose content is "bad" make run() raise, so their whole mini-batch fails.
SCRIPT = """
def run(mini_batch):
    rows = []
    for path in mini_batch:
        text = open(path).read().strip()
        if text == "bad":
            raise ValueError(f"cannot score {path}")
        rows.append(f"{text}")
    return rows
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}",
        config=ParallelRunConfig(
            entry_script="{script}", mini_batch_size="2", run_max_try=2, process_count_per_node=2,
            error_threshold={error_threshold}, allowed_failed_count={allowed_failed_count},
        ),
    )
"""


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Eight files in four mini-batches of two; the third mini-batch holds a bad file."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        (folder / f"item{i}.txt").write_text("bad" if i == 5 else f"ok{i}")
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    return folder, script


def _run(write_dag, tmp_path: Path, inputs: tuple[Path, Path], **bounds) -> tuple[object, Path]:
    folder, script = inputs
    out = tmp_path / "out"
    source = DAG_SOURCE.format(
        dag_id=f"thresholds_{abs(hash(tuple(bounds.items())))}",
        input=folder,
        output=out,
        script=script,
        **bounds,
    )
    dag = write_dag(source)
    return dag.test(), out


def test_failed_mini_batch_within_bounds_is_counted_and_the_run_succeeds(
    write_dag, tmp_path: Path, inputs
) -> None:
    dag_run, out = _run(write_dag, tmp_path, inputs, error_threshold=-1, allowed_failed_count=None)
    assert dag_run.state == "success"
    states = task_instances(dag_run)
    assert states[("score.run", 2)][0] == "failed"
    assert {states[("score.run", i)][0] for i in (0, 1, 3)} == {"success"}
    assert states[("score.aggregate", -1)][0] == "success"

    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert (summary["failed_mini_batches"], summary["failed_items"], summary["succeeded_items"]) == (1, 2, 6)
    assert summary["first_errors"][0]["id"] == "mb-000002"
    assert "cannot score" in summary["first_errors"][0]["message"]
    # The other mini-batches' rows are all there, in order; the failed one's are not.
    assert (out / "parallel_run_step.txt").read_text().split() == ["ok0", "ok1", "ok2", "ok3", "ok6", "ok7"]
    report = (out / "_parallelrun" / "processed_mini_batches.csv").read_text().splitlines()
    assert report[3].startswith("mb-000002,") and ",failed,2," in report[3]


def test_exceeding_a_bound_fails_the_dag_run_after_writing_everything(
    write_dag, tmp_path: Path, inputs
) -> None:
    dag_run, out = _run(write_dag, tmp_path, inputs, error_threshold=1, allowed_failed_count=None)
    assert dag_run.state == "failed"
    assert task_instances(dag_run)[("score.aggregate", -1)][0] == "failed"
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["thresholds_exceeded"] == ["failed items 2 > error_threshold 1"]
    assert (out / "_parallelrun" / "processed_mini_batches.csv").exists()
    assert (out / "parallel_run_step.txt").read_text().split() == ["ok0", "ok1", "ok2", "ok3", "ok6", "ok7"]


def test_allowed_failed_count_zero_fails_on_one_failed_mini_batch(write_dag, tmp_path: Path, inputs) -> None:
    dag_run, out = _run(write_dag, tmp_path, inputs, error_threshold=-1, allowed_failed_count=0)
    assert dag_run.state == "failed"
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["thresholds_exceeded"] == ["failed mini-batches 1 > allowed_failed_count 0"]
