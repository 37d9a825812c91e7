"""What from_azure_yaml refuses, each by name, with the value and what to do instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.operators.azure_yaml import map_azure_job
from tests.unit.test_azure_yaml import MNIST, mnist, variant

MNIST_INPUTS = {"images": "/data/digits", "digit_model": "/models/mnist"}
MNIST_OUTPUTS = {"predictions": "/out/predictions.txt"}


def _edited(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    map_azure_job(variant(tmp_path, MNIST, edit), inputs=MNIST_INPUTS, outputs=MNIST_OUTPUTS)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(job: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = job
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value

    return edit


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "queue_settings",
            {"job_tier": "spot"},
            r"field 'queue_settings' is not part of Azure's parallel job schema",
        ),
        ("task.type", "command", r"task.type='command'; only run_function"),
        ("task.command", "python x.py", r"task field\(s\) command have no equivalent; remove them"),
        ("retry_settings.attempts", 3, r"retry_settings=.* may hold max_retries and timeout only"),
        ("retry_settings.max_retries", -1, r"retry_settings.max_retries=-1 is not an integer >= 0"),
        ("retry_settings.timeout", "PT1M", r"retry_settings.timeout='PT1M' is not an integer >= 1"),
        ("resources.gpu_count", 1, r"resources.gpu_count has no equivalent"),
        ("resources.instance_count", 0, r"resources.instance_count=0 is not an integer >= 1"),
        (
            "mini_batch_error_threshold",
            "${{parent.inputs.tolerated}}",
            r"mini_batch_error_threshold='\$\{\{parent.inputs.tolerated\}\}' is not an integer >= -1; "
            r"write the value",
        ),
        (
            "max_concurrency_per_instance",
            "many",
            r"max_concurrency_per_instance='many' is not an integer >= 1",
        ),
        ("logging_level", "CHATTY", r"job.yml: logging_level='CHATTY' is invalid"),
        (
            "environment_variables",
            ["A=1"],
            r"environment_variables=\['A=1'\] must be a mapping of names to values",
        ),
        (
            "environment_variables",
            {"API_KEY": "abc"},
            r"job.yml: .*API_KEY",
        ),  # a literal secret, as in any DAG
        (
            "mini_batch_size",
            "10kb",
            r"mini_batch_size='10kb' is a size in bytes, but input_data \(uri_folder\)",
        ),
        ("input_data", "/data/digits", r"input_data='/data/digits' must name one of the job's inputs"),
        (
            "task.append_row_to",
            "/out/all.txt",
            r"task.append_row_to='/out/all.txt' must name one of the job's outputs",
        ),
        ("task.entry_script", None, r"task.entry_script is required"),
        ("task.program_arguments", "--run ${{name}}", r"holds \$\{\{name\}\}, which only Azure can resolve"),
        (
            "task.program_arguments",
            "--x ${{inputs.nope}}",
            r"refers to \$\{\{inputs.nope\}\} but declares no such",
        ),
        ("inputs.images.type", "uri_table", r"inputs.images has type 'uri_table'; supported: "),
        ("inputs.images.mode", "mount", r"inputs.images has mode 'mount'; Azure's modes are "),
        (
            "inputs.images.datastore_path",
            "x",
            r"inputs.images has key\(s\) datastore_path, which have no equivalent",
        ),
        ("outputs.predictions.mode", "download", r"outputs.predictions has mode 'download'"),
    ],
)
def test_a_field_that_cannot_be_mapped_is_refused_by_name(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _edited(tmp_path, _set(field, value))


def test_an_input_without_a_value_here_is_named_with_how_to_map_it() -> None:
    with pytest.raises(ConfigError) as raised:
        mnist(inputs={})
    assert str(raised.value).endswith(
        "inputs images (uri_folder, 'azureml:mnist-png:2'), digit_model (uri_folder, no path) have no value "
        "that can be read here (Azure data assets, datastore URIs and pipeline expressions are Azure's "
        "own); map each: from_azure_yaml(..., inputs={'images': '/local/path or fsspec URL', 'digit_model': "
        "'/local/path or fsspec URL'})"
    )


def test_an_output_without_a_value_here_is_named() -> None:
    with pytest.raises(ConfigError, match=r"outputs predictions \(uri_file, no path\) have no value"):
        mnist(outputs={})


def test_a_mapping_for_a_name_the_job_does_not_have_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"inputs=\{'image': ...\} names no input of the job; its inputs: "):
        mnist(inputs={**MNIST_INPUTS, "image": "/typo"})


def test_the_predefined_error_threshold_and_the_field_must_agree(tmp_path: Path) -> None:
    def edit(job: dict[str, Any]) -> None:
        job["error_threshold"] = 5
        job["task"]["program_arguments"] += " --error_threshold 7"

    with pytest.raises(
        ConfigError, match=r"error_threshold=5 and program argument --error_threshold 7 disagree"
    ):
        _edited(tmp_path, edit)


def test_a_job_of_another_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "job.yml").write_text("type: command\ncommand: python train.py\n")
    with pytest.raises(ConfigError, match=r"type='command'; from_azure_yaml ports a parallel job"):
        map_azure_job(tmp_path / "job.yml")


def test_a_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the Azure ML job file '.*nope.yml'"):
        map_azure_job(tmp_path / "nope.yml")
    (tmp_path / "bad.yml").write_text("type: [parallel\n")
    with pytest.raises(ConfigError, match=r"bad.yml: not valid YAML"):
        map_azure_job(tmp_path / "bad.yml")


def test_a_pipeline_with_several_parallel_steps_needs_job(tmp_path: Path) -> None:
    step = yaml.safe_load(MNIST.read_text())
    step["task"]["code"] = str(MNIST.parent / "script")
    (tmp_path / "pipeline.yml").write_text(
        yaml.safe_dump({"type": "pipeline", "jobs": {"a": step, "b": step}})
    )
    with pytest.raises(
        ConfigError, match=r"the pipeline has 2 parallel steps \(a, b\); name the one to port"
    ):
        map_azure_job(tmp_path / "pipeline.yml")
    with pytest.raises(
        ConfigError, match=r"job='c' is not a parallel step of this pipeline; its parallel steps: a, b"
    ):
        map_azure_job(tmp_path / "pipeline.yml", job="c")
    mapping = map_azure_job(tmp_path / "pipeline.yml", job="b", inputs=MNIST_INPUTS, outputs=MNIST_OUTPUTS)
    assert mapping.task_id == "b"


def test_job_is_refused_for_a_single_job_file() -> None:
    with pytest.raises(
        ConfigError, match=r"job='x' names a pipeline step, but this file holds one parallel job"
    ):
        map_azure_job(MNIST, job="x")


def test_a_registered_component_is_refused(tmp_path: Path) -> None:
    pipeline = {"type": "pipeline", "jobs": {"p": {"type": "parallel", "component": "azureml:scorer:3"}}}
    (tmp_path / "pipeline.yml").write_text(yaml.safe_dump(pipeline))
    with pytest.raises(ConfigError, match=r"component='azureml:scorer:3' is a registered component"):
        map_azure_job(tmp_path / "pipeline.yml")


def test_where_the_run_writes_must_be_said_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"task.append_row_to sets the output; drop output_path="):
        mnist(output_path="/elsewhere")
    path = variant(tmp_path, MNIST, lambda job: job["task"].pop("append_row_to"))
    with pytest.raises(ConfigError, match=r"the job has no task.append_row_to, .* give output_path="):
        map_azure_job(path, inputs=MNIST_INPUTS, outputs=MNIST_OUTPUTS)


def test_a_uri_file_output_needs_its_folder() -> None:
    with pytest.raises(
        ConfigError, match=r"outputs.predictions='predictions.txt' is a uri_file .* full path"
    ):
        mnist(outputs={"predictions": "predictions.txt"})


def test_config_overrides_change_fields_and_refuse_unknown_ones() -> None:
    assert mnist(config_overrides={"warm_workers": False}).config.warm_workers is False
    with pytest.raises(
        ConfigError, match=r"config_overrides names warm, which are not ParallelRunConfig fields"
    ):
        mnist(config_overrides={"warm": False})


def test_the_operator_arguments_it_builds_are_not_given_twice() -> None:
    with pytest.raises(ConfigError, match=r"from_azure_yaml builds config from the YAML"):
        mnist().operator_arguments({"config": None})
    arguments = mnist().operator_arguments({"retries": 2, "task_id": "digits"})
    assert (arguments["task_id"], arguments["retries"]) == ("digits", 2)


def test_a_job_without_a_name_needs_a_task_id(tmp_path: Path) -> None:
    mapping = map_azure_job(
        variant(tmp_path, MNIST, lambda job: job.pop("name")), inputs=MNIST_INPUTS, outputs=MNIST_OUTPUTS
    )
    with pytest.raises(ConfigError, match=r"the YAML names no job \(name:\); give task_id="):
        mapping.operator_arguments({})
