"""Per-run configuration from Params (Azure's PipelineParameter), and an operator whose input never came."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_parallelrun import ConfigError, ParallelRunConfig
from tests.airflow.conftest import task_instances

pytestmark = pytest.mark.airflow

SCRIPT = """
import os

def run(mini_batch):
    return [open(p).read() for p in mini_batch if "bad" not in os.path.basename(p)]
"""

DAG_SOURCE = """
from airflow.sdk import DAG, Param
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None, params={{
    "mini_batch_size": Param("10", type="string"),
    "error_threshold": Param(0, type="integer", minimum=-1),
}}) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script="{script}",
            mini_batch_size="{{{{ params.mini_batch_size }}}}",
            error_threshold="{{{{ params.error_threshold }}}}",
            run_max_try=1,
            process_count_per_node=1,
        ),
    )
"""


@pytest.fixture
def form_dag(write_dag, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        (folder / f"item{i}.txt").write_text(f"v{i}")
    (folder / "item5_bad.txt").write_text("bad")
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    return write_dag(
        DAG_SOURCE.format(
            dag_id=f"form_{tmp_path.name}", input=folder, output=tmp_path / "out", script=script
        )
    )


def _runs(dag_run) -> dict[tuple[str, int], str]:
    return {key: state for key, (state, _) in task_instances(dag_run).items()}


def test_mini_batch_size_and_error_threshold_come_from_the_runs_params(form_dag) -> None:
    # mini_batch_size 2: six files in three mini-batches; error_threshold -1: the bad file is tolerated.
    dag_run = form_dag.test(run_conf={"mini_batch_size": "2", "error_threshold": -1})
    states = _runs(dag_run)
    assert sorted(k[1] for k in states if k[0] == "score.run") == [0, 1, 2]
    assert states[("score.aggregate", -1)] == "success"
    assert str(dag_run.state) == "success"


def test_the_same_dag_with_other_params_partitions_and_counts_otherwise(form_dag) -> None:
    # Defaults: one mini-batch of ten files, and error_threshold 0 fails the run on the bad file.
    dag_run = form_dag.test()
    states = _runs(dag_run)
    assert sorted(k[1] for k in states if k[0] == "score.run") == [0]
    assert states[("score.aggregate", -1)] == "failed"


def test_an_invalid_rendered_value_fails_the_partition_naming_field_and_value(form_dag, capfd) -> None:
    states = _runs(form_dag.test(run_conf={"mini_batch_size": "0"}))
    assert states[("score.partition", -1)] == "failed"
    logs = capfd.readouterr()
    assert "invalid ParallelRunConfig: mini_batch_size='0'" in logs.out + logs.err


def test_templated_fields_are_checked_once_rendered_and_the_others_at_parse_time() -> None:
    config = ParallelRunConfig(
        entry_script="s.py", error_threshold="{{ params.t }}", mini_batch_size="{{ x }}"
    )
    assert config.templates == {"error_threshold": "{{ params.t }}", "mini_batch_size": "{{ x }}"}
    rendered = config.rendered({"error_threshold": " -1 ", "mini_batch_size": "20"})
    assert (rendered.error_threshold, rendered.mini_batch_size, rendered.templates) == (-1, "20", {})
    with pytest.raises(ConfigError, match=r"error_threshold=-5 is invalid"):
        config.rendered({"error_threshold": "-5", "mini_batch_size": "20"})
    with pytest.raises(ConfigError, match=r"error_threshold='ten' is invalid"):
        config.rendered({"error_threshold": "ten", "mini_batch_size": "20"})
    with pytest.raises(ConfigError, match="run_max_try=0"):
        ParallelRunConfig(entry_script="s.py", error_threshold="{{ params.t }}", run_max_try=0)


SKIP_DAG = """
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    @task
    def wait_for_input():
        {body}

    wait_for_input() >> ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(entry_script="{script}", process_count_per_node=1),
    )
"""


@pytest.mark.parametrize(
    ("body", "aggregate", "message"),
    [
        ("raise AirflowSkipException('no new files')", "skipped", "was skipped: nothing ran"),
        ("raise RuntimeError('the source is down')", "failed", "did not run because a task before it failed"),
    ],
)
def test_an_input_that_never_came_skips_or_fails_the_aggregate_saying_why(
    write_dag, tmp_path: Path, capfd, body: str, aggregate: str, message: str
) -> None:
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    dag = write_dag(
        SKIP_DAG.format(
            dag_id=f"skip_{tmp_path.name}", body=body, input=tmp_path, output=tmp_path / "out", script=script
        )
    )
    states = _runs(dag.test())
    assert states[("score.aggregate", -1)] == aggregate
    logs = capfd.readouterr()
    assert message in logs.out + logs.err
