"""Azure ML v2 parallel job YAML mapped onto the operator's arguments: every field, every refusal.

The YAML files under ``azure_yaml/`` are shaped like Microsoft's published examples (iris: an
mltable table appended to one file; mnist: a folder of files and program arguments; a
partition_keys job; a pipeline whose parallel step is a component file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_parallelrun.core.inputs.datasets import FileDataset, TabularDataset
from airflow_parallelrun.operators import azure_yaml
from airflow_parallelrun.operators.azure_yaml import map_azure_job

FIXTURES = Path(__file__).parent / "azure_yaml"
IRIS = FIXTURES / "iris" / "pipeline.yml"
MNIST = FIXTURES / "mnist" / "job.yml"
PARTITION = FIXTURES / "partition" / "job.yml"
COMPONENT = FIXTURES / "component" / "pipeline.yml"


def iris(**kwargs: Any) -> azure_yaml.AzureJobMapping:
    kwargs.setdefault("inputs", {"model_dir": "/models/iris"})
    kwargs.setdefault("outputs", {"scored": "/out/{{ run_id }}/scored.csv"})
    return map_azure_job(IRIS, **kwargs)


def mnist(**kwargs: Any) -> azure_yaml.AzureJobMapping:
    kwargs.setdefault("inputs", {"images": "/data/digits", "digit_model": "/models/mnist"})
    kwargs.setdefault("outputs", {"predictions": "/out/predictions.txt"})
    return map_azure_job(MNIST, **kwargs)


def variant(tmp_path: Path, fixture: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Write a copy of a single-job fixture with ``edit`` applied; its code stays where the fixture's is."""
    job = yaml.safe_load(fixture.read_text())
    job["task"]["code"] = str(fixture.parent / job["task"]["code"])
    edit(job)
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_iris_maps_every_setting_with_its_unit() -> None:
    config = iris().config
    assert config.mini_batch_size == "1kb"  # a table: Azure's approximate physical size, KB = 1024 bytes
    assert config.for_dataset(tabular=True).batch_size(tabular=True).value == 1024
    assert config.error_threshold == 5
    assert config.allowed_failed_count == 3  # mini_batch_error_threshold: failed mini-batches
    assert config.allowed_failed_percent == 40  # the predefined program argument
    assert config.run_max_try == 2  # retry_settings.max_retries 1: one retry after the first try
    assert config.run_invocation_timeout == 45
    assert (config.node_count, config.process_count_per_node) == (2, 2)
    assert config.logging_level == "DEBUG"
    assert config.environment_variables == {"IRIS_LABEL_PREFIX": "iris", "IRIS_ROUND": "2"}
    assert config.entry_script == str(FIXTURES / "iris" / "script" / "score.py")  # task.code + entry_script


def test_iris_mltable_becomes_a_csv_table_and_append_row_to_a_uri_file_names_the_merged_file() -> None:
    mapping = iris()
    assert mapping.inputs == TabularDataset(
        path=str(FIXTURES / "iris" / "iris-mltable"), format="csv", files=["flowers.csv"]
    )
    assert mapping.output_path == "/out/{{ run_id }}"
    assert (mapping.config.output_action, mapping.config.append_row_file_name) == ("append_row", "scored.csv")
    assert mapping.task_id == "score_iris"  # the pipeline's step name


def test_iris_program_arguments_are_substituted_and_keep_azures_predefined_ones() -> None:
    # The script parses them with parse_known_args, as Azure's docs ask: it sees what it saw there.
    assert iris().arguments == [
        "--model", "/models/iris", "--allowed_failed_percent", "40", "--task_overhead_timeout", "900",
        "--progress_update_timeout", "300", "--resource_monitor_interval", "15",
    ]  # fmt: skip


def test_fields_without_an_effect_here_are_logged_by_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="airflow_parallelrun.operators.azure_yaml"):
        notes = iris().notes
    assert any(note.startswith("compute='azureml:cpu-cluster' ignored: ") for note in notes)
    assert any(note.startswith("task.environment ignored: ") for note in notes)
    assert any(note.startswith("program argument --task_overhead_timeout ignored") for note in notes)
    assert all(note in caplog.text for note in notes)


def test_mnist_folder_is_a_file_list_and_literal_inputs_become_their_values() -> None:
    mapping = mnist()
    assert mapping.inputs == FileDataset(path="/data/digits")
    assert mapping.config.mini_batch_size == "5"  # files per mini-batch
    assert mapping.arguments == [
        "--model", "/models/mnist", "--top_k", "3", "--predictions", "/out/predictions.txt"
    ]  # fmt: skip
    assert (mapping.task_id, mapping.tooltip) == ("identify_digits", "Identify digits")


def test_azures_defaults_apply_where_the_yaml_is_silent() -> None:
    config = mnist().config  # no error_threshold, mini_batch_error_threshold -1, no logging_level
    assert config.error_threshold == -1
    assert config.allowed_failed_count is None
    assert config.allowed_failed_percent is None
    assert config.run_max_try == 3  # max_retries 2
    assert config.logging_level == "INFO"


def test_without_mini_batch_size_a_file_input_takes_azures_one_file(tmp_path: Path) -> None:
    path = variant(tmp_path, MNIST, lambda job: job.pop("mini_batch_size"))
    config = map_azure_job(
        path, inputs={"images": "/d", "digit_model": "/m"}, outputs={"predictions": "/o/p"}
    ).config
    assert config.mini_batch_size == "1"


def test_an_input_passed_to_the_script_as_a_url_is_noted() -> None:
    notes = mnist(inputs={"images": "/data/digits", "digit_model": "s3://models/mnist"}).notes
    assert any(note.startswith("inputs.digit_model: the entry script receives the URL") for note in notes)


def test_a_pipeline_step_made_of_a_component_file_merges_both() -> None:
    mapping = map_azure_job(COMPONENT, inputs={"images": "/data/digits"})
    assert mapping.task_id == "identify"
    assert mapping.config.mini_batch_size == "4"  # the step's own value over the component's "10"
    assert mapping.arguments == ["--model", str(FIXTURES / "component" / "models"), "--top_k", "5"]
    assert mapping.output_path == str(FIXTURES / "component" / "out")  # relative to the pipeline file
    assert mapping.config.entry_script == str(
        FIXTURES / "mnist" / "script" / "identify.py"
    )  # to the component


def test_partition_keys_pass_through() -> None:
    sales = TabularDataset(path="/data/sales", format="parquet")
    mapping = map_azure_job(
        PARTITION, inputs={"sales": sales}, outputs={"model_folder": "/m"}, output_path="/o"
    )
    assert mapping.config.partition_keys == ("Store", "Brand")
    assert mapping.config.mini_batch_size is None
    assert mapping.inputs is sales
    # No append_row_to: the script writes its own files (here into the model folder).
    assert (mapping.config.output_action, mapping.output_path) == ("summary_only", "/o")
    assert mapping.arguments[:2] == ["--drop_cols", "Revenue,Advert,Store,Brand"]
    assert mapping.arguments[-2:] == ["--model_folder", "/m"]


def test_partition_keys_take_effect_over_a_size_as_in_azure(tmp_path: Path) -> None:
    path = variant(tmp_path, PARTITION, lambda job: job.update(mini_batch_size="10kb"))
    sales = TabularDataset(path="/data/sales", format="csv")
    mapping = map_azure_job(path, inputs={"sales": sales}, outputs={"model_folder": "/m"}, output_path="/o")
    assert mapping.config.mini_batch_size is None
    assert "mini_batch_size='10kb' ignored: partition_keys take effect, as in Azure" in mapping.notes
