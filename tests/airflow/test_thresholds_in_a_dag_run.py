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


def _one_failed_rest_skipped(dag_run) -> int:
    """Assert that one run task instance failed and the three others were skipped; return the failed one."""
    states = task_instances(dag_run)
    runs = {i: state for (task, i), (state, _) in states.items() if task == "score.run"}
    failed = [i for i, state in runs.items() if state == "failed"]
    assert len(failed) == 1 and sorted(runs.values()) == ["failed", "skipped", "skipped", "skipped"], runs
    assert states[("score.aggregate", -1)][0] == "failed"
    return failed[0]


def test_exceeding_a_bound_stops_the_run_and_fails_it_after_writing_everything(
    write_dag, tmp_path: Path, inputs
) -> None:
    folder, _ = inputs
    for path in folder.iterdir():
        path.write_text("bad")
    dag_run, out = _run(write_dag, tmp_path, inputs, error_threshold=1, allowed_failed_count=None)
    assert dag_run.state == "failed"
    # Fail fast: the first mini-batch to fail pushes failed items past the bound; the ones not yet
    # started end as skipped, not failed, and the summary says why.
    first = _one_failed_rest_skipped(dag_run)
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["thresholds_exceeded"] == ["failed items 2 > error_threshold 1"]
    assert (summary["failed_mini_batches"], summary["skipped_mini_batches"], summary["skipped_items"]) == (
        1,
        3,
        6,
    )
    assert summary["aborted"] == {"reason": "failed items 2 > error_threshold 1"}
    assert (out / "_parallelrun" / "processed_mini_batches.csv").exists()
    assert (out / "parallel_run_step.txt").read_text() == ""
    # Dead letters: every input that was not processed, and why, ready to re-run.
    assert (out / "_parallelrun" / "errors" / "failed_inputs.txt").read_text().split() == [
        str(folder / f"item{i}.txt") for i in range(8)
    ]
    letter = json.loads((out / "_parallelrun" / "errors" / f"mb-{first:06d}.json").read_text())
    assert letter["error_category"] == "entry_script" and "cannot score" in letter["error_traceback"]
    other = next(i for i in range(4) if i != first)
    skipped = json.loads((out / "_parallelrun" / "errors" / f"mb-{other:06d}.json").read_text())
    assert skipped["status"] == "skipped"
    assert skipped["inputs"] == [str(folder / f"item{2 * other + k}.txt") for k in (0, 1)]


def test_a_script_that_cannot_load_stops_the_run_at_the_first_mini_batch(
    write_dag, tmp_path: Path, inputs
) -> None:
    _, script = inputs
    script.write_text("import no_such_module_here\n\ndef run(mini_batch):\n    return mini_batch\n")
    dag_run, out = _run(write_dag, tmp_path, inputs, error_threshold=-1, allowed_failed_count=None)
    assert dag_run.state == "failed"
    first = _one_failed_rest_skipped(dag_run)
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["aborted"]["reason"].startswith("the entry script cannot load")
    assert "no_such_module_here" in summary["first_errors"][0]["message"]
    assert (summary["failed_mini_batches"], summary["skipped_mini_batches"]) == (1, 3)
    letter = json.loads((out / "_parallelrun" / "errors" / f"mb-{first:06d}.json").read_text())
    assert str(script) in letter["error_traceback"] and letter["error_category"] == "entry_script_load"


def test_allowed_failed_count_zero_fails_on_one_failed_mini_batch(write_dag, tmp_path: Path, inputs) -> None:
    dag_run, out = _run(write_dag, tmp_path, inputs, error_threshold=-1, allowed_failed_count=0)
    assert dag_run.state == "failed"
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["thresholds_exceeded"] == ["failed mini-batches 1 > allowed_failed_count 0"]
