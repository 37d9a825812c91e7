"""Azure's variables in a real DAG run: ``AZUREML_BI_OUTPUT_PATH``, ``AZUREML_MODEL_DIR``, templated values.

An ``environment_variables`` value may follow an ``output_path`` that holds ``{{ run_id }}``:
both render to the same run id in every task, and the worker sees the run's output folder as
``AZUREML_BI_OUTPUT_PATH``. A model given by a path relative to the DAG file is found there.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.airflow.conftest import task_instances
from tests.conftest import TEST_DAGS

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SCRIPT = """
import os

def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "scorer.txt")) as f:
        model = f.read().strip()

def run(mini_batch):
    seen = [os.environ[name] for name in ("RUN_OUTPUT", "RUN_ID", "AZUREML_BI_OUTPUT_PATH")]
    return ["|".join([os.path.basename(p), model, *seen]) for p in mini_batch]
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script="{script}",
            mini_batch_size="1",
            run_max_try=1,
            process_count_per_node=1,
            models={{"scorer": "{model}"}},
            environment_variables={{
                "RUN_OUTPUT": "{output}/{{{{ run_id }}}}",
                "RUN_ID": "{{{{ run_id }}}}",
            }},
        ),
    )
"""


@pytest.fixture
def model_beside_the_dag() -> str:
    """A model file in a folder beside the test DAGs, named relative to them (as a DAG would)."""
    folder = TEST_DAGS / f"models-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "scorer.txt").write_text("scorer-v3")
    yield f"{folder.name}/scorer.txt"
    shutil.rmtree(folder, ignore_errors=True)


def test_a_templated_value_follows_the_output_path_and_the_worker_sees_azures_variables(
    write_dag, tmp_path: Path, model_beside_the_dag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLELRUN_MODEL_CACHE", str(tmp_path / "model-cache"))
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"item{i}.txt").write_text(f"v{i}")
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    dag = write_dag(
        DAG_SOURCE.format(
            dag_id=f"azureml_env_{tmp_path.name}",
            input=folder,
            output=out,
            script=script,
            model=model_beside_the_dag,
        )
    )
    dag_run = dag.test()
    assert str(dag_run.state) == "success", task_instances(dag_run)
    run_folder = out / dag_run.run_id
    lines = (run_folder / "parallel_run_step.txt").read_text().splitlines()
    assert [line.split("|") for line in lines] == [
        [f"item{i}.txt", "scorer-v3", str(run_folder), dag_run.run_id, str(run_folder)] for i in range(2)
    ]
