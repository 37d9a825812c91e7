"""ParallelRunOperator.from_azure_yaml in a DAG: the task group it adds, and a real DAG run from a YAML."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from airflow.sdk import DAG

from airflow_parallelrun import ConfigError, ParallelRunOperator
from tests.airflow.conftest import task_instances

pytestmark = pytest.mark.airflow

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "azure_yaml"
IRIS = FIXTURES / "iris" / "pipeline.yml"
MNIST = FIXTURES / "mnist" / "job.yml"
COMPONENT = FIXTURES / "component" / "pipeline.yml"


def test_one_call_adds_the_task_group_with_the_yamls_settings() -> None:
    with DAG("azure_yaml_structure", schedule=None) as dag:
        group = ParallelRunOperator.from_azure_yaml(
            MNIST,
            inputs={"images": "/data/digits", "digit_model": "/models/mnist"},
            outputs={"predictions": "/out/{{ run_id }}/predictions.txt"},
            retries=2,
            run_task_args={"queue": "gpu"},
        )
    assert set(dag.task_dict) == {
        "identify_digits.partition",
        "identify_digits.run",
        "identify_digits.aggregate",
    }
    run = dag.task_dict["identify_digits.run"]
    assert run.partial_kwargs["arguments"] == [
        "--model", "/models/mnist", "--top_k", "3", "--predictions", "/out/{{ run_id }}/predictions.txt"
    ]  # fmt: skip
    assert (run.partial_kwargs["retries"], run.partial_kwargs["queue"]) == (2, "gpu")
    assert group.entry_script == str(FIXTURES / "mnist" / "script" / "identify.py")
    assert group.config.append_row_file_name == "predictions.txt"
    assert group.tooltip == "Identify digits"
    assert dag.task_dict["identify_digits.partition"].output_path == "/out/{{ run_id }}"


def test_a_missing_mapping_fails_when_the_dag_is_parsed() -> None:
    with (
        DAG("azure_yaml_missing", schedule=None),
        pytest.raises(ConfigError, match=r"inputs images \(uri_folder"),
    ):
        ParallelRunOperator.from_azure_yaml(MNIST, outputs={"predictions": "/out/p.txt"})


DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import ParallelRunOperator

with DAG("azure_yaml_iris", schedule=None) as dag:
    ParallelRunOperator.from_azure_yaml(
        "{yaml}",
        inputs={{"model_dir": "{model}"}},
        outputs={{"scored": "{out}/scored.csv"}},
    )
"""


@pytest.mark.slow
def test_an_iris_shaped_job_runs_from_its_yaml_and_appends_every_row(write_dag, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "threshold.json").write_text(json.dumps({"petal_length": 4.0}))
    out = tmp_path / "out"
    dag = write_dag(DAG_SOURCE.format(yaml=IRIS, model=model, out=out))
    dag_run = dag.test()
    assert dag_run.state == "success", task_instances(dag_run)

    with open(FIXTURES / "iris" / "iris-mltable" / "flowers.csv") as handle:
        flowers = list(csv.DictReader(handle))
    # append_row_to: the merged returns in input order, in Azure's text format (a row's values
    # separated by a space), labelled by the environment variable and the --model the YAML gives.
    expected = [
        f"{f['flower_id']} iris-{'large' if float(f['petal_length']) > 4.0 else 'small'}" for f in flowers
    ]
    assert (out / "scored.csv").read_text().splitlines() == expected
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["total_items"] == summary["succeeded_items"] == 300
    assert summary["total_mini_batches"] >= 3  # "1kb" of a 3.5 KB table
    assert summary["thresholds"]["error_threshold"] == 5


COMPONENT_DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import ParallelRunOperator

with DAG("azure_yaml_component", schedule=None) as dag:
    ParallelRunOperator.from_azure_yaml(
        "{yaml}",
        inputs={{"images": "{images}", "digit_model": "{model}"}},
        outputs={{"predictions": "{out}/predictions.txt"}},
        config_overrides={{"process_count_per_node": 2}},
    )
"""


@pytest.mark.slow
def test_a_pipeline_step_of_a_component_runs_over_a_folder_with_its_program_arguments(
    write_dag, tmp_path: Path
) -> None:
    images, model, out = tmp_path / "images", tmp_path / "model", tmp_path / "out"
    images.mkdir()
    model.mkdir()
    for i in range(10):
        (images / f"digit_{i:02d}.png").write_bytes(b"not really a png")
    (model / "digit.txt").write_text("7")
    dag = write_dag(COMPONENT_DAG_SOURCE.format(yaml=COMPONENT, images=images, model=model, out=out))
    dag_run = dag.test()
    assert dag_run.state == "success", task_instances(dag_run)
    # --model and --top_k (5: the step's value over the component's default 1) reached the script.
    lines = (out / "predictions.txt").read_text().splitlines()
    assert lines == [f"digit_{i:02d}.png: 7 (top 5)" for i in range(10)]
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert (summary["total_mini_batches"], summary["succeeded_items"]) == (3, 10)  # 4 files each
