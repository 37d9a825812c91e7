"""Map an Azure ML v2 parallel job's YAML onto ParallelRunOperator's arguments, field by field.

``ParallelRunOperator.from_azure_yaml`` calls :func:`map_azure_job`. Every field of Azure's
parallel job schema (``reference-yaml-job-parallel``) is either mapped, noted as having no
effect here (logged, and kept in ``AzureJobMapping.notes``), or refused by name with what to do;
an unknown key is refused, so nothing in the file is silently dropped. Azure's defaults apply
where the YAML is silent: ``error_threshold`` and ``mini_batch_error_threshold`` -1 (ignore),
``retry_settings`` 2 retries and 60 s, one file per mini-batch for a file input.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.datasets import Dataset, FileDataset, SqlDataset, TabularDataset
from airflow_parallelrun.core.sizes import is_mini_batch_size
from airflow_parallelrun.operators.azure_mltable import mltable_dataset
from airflow_parallelrun.operators.azure_yaml_job import ParallelJobFile, read_parallel_job
from airflow_parallelrun.operators.azure_yaml_ports import (
    EXPRESSION,
    Port,
    declared_ports,
    references,
    resolve_ports,
    substitute,
    url_notes,
)
from airflow_parallelrun.operators.azure_yaml_settings import config_values

log = logging.getLogger(__name__)

_MAPPED_KEYS = {
    "type", "inputs", "outputs", "task", "input_data", "mini_batch_size", "mini_batch_error_threshold",
    "error_threshold", "logging_level", "resources", "max_concurrency_per_instance", "retry_settings",
    "environment_variables", "partition_keys", "name", "display_name", "description",
}  # fmt: skip
#: Fields that change nothing here, and why (logged when the YAML has them).
_NOTED_KEYS = {
    "compute": "Airflow's executor places the tasks: route them with queue= or pool= (or run_task_args=)",
    "experiment_name": "the DAG names the run",
    "tags": "no equivalent; use the DAG's tags",
    "version": "no equivalent",
    "is_deterministic": "no equivalent: resume=True reuses succeeded mini-batches",
    "identity": "credentials come from Airflow Connections (conn_id on the dataset, output_conn_id)",
    "$schema": None,
}
_TASK_KEYS = {"type", "code", "entry_script", "environment", "program_arguments", "append_row_to"}
#: What the DAG gives ParallelRunOperator itself when it ports a YAML file: refused in operator_kwargs.
_FROM_YAML = ("inputs", "config", "arguments")


@dataclass(frozen=True)
class AzureJobMapping:
    """What an Azure parallel job's YAML maps to: the operator's arguments, and notes on what it ignored."""

    task_id: str | None
    inputs: Dataset
    output_path: Any
    config: ParallelRunConfig
    arguments: list[str]
    tooltip: str
    notes: tuple[str, ...]

    def operator_arguments(self, operator_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Return the keyword arguments of ParallelRunOperator: the mapped ones and the DAG's own."""
        if given := sorted(set(_FROM_YAML).intersection(operator_kwargs)):
            raise ConfigError(
                f"from_azure_yaml builds {', '.join(given)} from the YAML; map inputs with "
                "inputs={name: path} and change config fields with config_overrides={...}"
            )
        kwargs = dict(operator_kwargs)
        task_id = kwargs.pop("task_id", None) or self.task_id
        if not task_id:
            raise ConfigError("the YAML names no job (name:); give task_id='<id>' to from_azure_yaml")
        kwargs.setdefault("tooltip", self.tooltip)
        return {
            "task_id": task_id,
            "inputs": self.inputs,
            "output_path": self.output_path,
            "config": self.config,
            "arguments": self.arguments,
            **kwargs,
        }


def _check_keys(where: str, job: Mapping[str, Any], notes: list[str]) -> None:
    """Refuse an unknown key by name; note a known one that changes nothing here."""
    for key in job:
        if key in _NOTED_KEYS:
            if _NOTED_KEYS[key]:
                notes.append(f"{key}={job[key]!r} ignored: {_NOTED_KEYS[key]}")
        elif key not in _MAPPED_KEYS:
            raise ConfigError(
                f"{where}: field {key!r} is not part of Azure's parallel job schema as ported here; "
                f"remove it (mapped: {', '.join(sorted(_MAPPED_KEYS))}; ignored with a note: "
                f"{', '.join(sorted(_NOTED_KEYS))})"
            )
    task = job.get("task")
    if not isinstance(task, Mapping):
        raise ConfigError(f"{where}: task is required (type: run_function, code, entry_script, ...)")
    if unknown := sorted(set(task) - _TASK_KEYS):
        raise ConfigError(f"{where}: task field(s) {', '.join(unknown)} have no equivalent; remove them")
    if task.get("type", "run_function") != "run_function":
        raise ConfigError(
            f"{where}: task.type={task['type']!r}; only run_function (an entry script with init() and run()) "
            "exists in Azure's parallel job and here"
        )
    if "environment" in task:
        notes.append(
            "task.environment ignored: the entry script runs in the Airflow workers' Python environment; "
            "install its libraries there (see docs/install.md)"
        )


def _entry_script(where: str, task: Mapping[str, Any]) -> str:
    script = task.get("entry_script")
    if not isinstance(script, str) or not script:
        raise ConfigError(f"{where}: task.entry_script is required: the Python file with init() and run()")
    return os.path.normpath(os.path.join(str(task.get("code")), script))


def _tokens(where: str, arguments: Any) -> list[str]:
    """Return ``task.program_arguments`` as argv tokens: Azure writes one string, the SDK a list."""
    if arguments is None:
        return []
    if isinstance(arguments, str):
        return shlex.split(arguments)
    if isinstance(arguments, list):
        return [str(token) for token in arguments]
    raise ConfigError(
        f"{where}: task.program_arguments={arguments!r} must be a string (or a list of strings)"
    )


def _single_reference(where: str, field: str, value: Any, side: str) -> str:
    """Return ``x`` of a field that must be exactly ``${{<side>.x}}`` (input_data, append_row_to)."""
    match = EXPRESSION.fullmatch(str(value).strip()) if isinstance(value, str) else None
    name = match.group(1).partition(".")[2] if match and match.group(1).startswith(f"{side}.") else ""
    if not name:
        raise ConfigError(
            f"{where}: {field}={value!r} must name one of the job's {side}: ${{{{{side}.<name>}}}}"
        )
    return name


def _input_dataset(where: str, name: str, kind: str, value: Any) -> Dataset:
    """Return the dataset for ``input_data``: as mapped, or from its path as Azure splits that type."""
    if isinstance(value, (FileDataset, TabularDataset, SqlDataset)):
        return value
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise ConfigError(f"{where}: input_data {name}={value!r} must be a path, an fsspec URL or a dataset")
    if kind == "mltable":
        return mltable_dataset(path)
    if kind == "uri_file":
        return FileDataset(files=[path])
    if kind == "uri_folder":
        return FileDataset(path=path)
    raise ConfigError(f"{where}: input_data {name} has type {kind!r}; use uri_folder or mltable")


def _output_place(
    where: str, task: Mapping[str, Any], outputs: Mapping[str, Any], ports: Mapping[str, Port]
) -> dict[str, Any]:
    """Return ``output_path`` and the config's output fields for ``task.append_row_to``."""
    if "append_row_to" not in task:
        return {"output_action": "summary_only"}
    name = _single_reference(where, "task.append_row_to", task["append_row_to"], "outputs")
    value = str(outputs[name])
    if ports[name].type != "uri_file":
        return {"output_path": value, "output_action": "append_row"}
    folder, file_name = posixpath.split(value.rstrip("/"))
    if not folder or not file_name:
        raise ConfigError(
            f"{where}: outputs.{name}={value!r} is a uri_file that task.append_row_to writes; give "
            "the file's full path, e.g. '/data/out/{{ run_id }}/scored.csv' (its folder also holds "
            "the run's records)"
        )
    return {"output_path": folder, "output_action": "append_row", "append_row_file_name": file_name}


def _check_mini_batch_size(where: str, size: Any, dataset: Dataset, kind: str) -> None:
    """Refuse a size in bytes for a file input: Azure counts files for uri_folder (and file-list mltable)."""
    if dataset.tabular or size is None or re.fullmatch(r"\s*\d+\s*", str(size)):
        return
    if is_mini_batch_size(size):
        raise ConfigError(
            f"{where}: mini_batch_size={size!r} is a size in bytes, but input_data ({kind}) is a list of "
            "files, which Azure splits by file count; give a count of files, or make the input an mltable "
            "whose MLTable file reads the files (read_delimited, read_parquet or read_json_lines) to split "
            "it as a table"
        )


def _resolved(
    job: ParallelJobFile,
    inputs: Mapping[str, Any] | None,
    outputs: Mapping[str, Any] | None,
    notes: list[str],
) -> tuple[Dataset, list[str], dict[str, Any], str]:
    """Return the input dataset, the substituted arguments, the output placement and the input's type."""
    where, fields_ = job.source, job.fields
    task = fields_["task"]
    tokens = _tokens(where, task.get("program_arguments"))
    data_name = _single_reference(where, "input_data", fields_.get("input_data"), "inputs")
    used = [ref for token in tokens for ref in references(token, where, "task.program_arguments")]
    in_ports = declared_ports(where, "inputs", fields_.get("inputs"))
    out_ports = declared_ports(where, "outputs", fields_.get("outputs"))
    needed_out = [name for side, name in used if side == "outputs"]
    if "append_row_to" in task:
        needed_out.append(_single_reference(where, "task.append_row_to", task["append_row_to"], "outputs"))
    in_values = resolve_ports(
        where, "inputs", in_ports, inputs, [data_name, *(n for s, n in used if s == "inputs")]
    )
    out_values = resolve_ports(where, "outputs", out_ports, outputs, needed_out)
    dataset = _input_dataset(where, data_name, in_ports[data_name].type, in_values[data_name])
    values = {
        **{("inputs", k): v for k, v in in_values.items()},
        **{("outputs", k): v for k, v in out_values.items()},
    }
    arguments = [substitute(token, values) for token in tokens]
    notes += url_notes(in_ports, {k: v for k, v in in_values.items() if k != data_name})
    return dataset, arguments, _output_place(where, task, out_values, out_ports), in_ports[data_name].type


def _build_config(
    values: dict[str, Any], overrides: Mapping[str, Any] | None, where: str
) -> ParallelRunConfig:
    names = {f.name for f in fields(ParallelRunConfig)}
    if unknown := sorted(set(overrides or {}) - names):
        raise ConfigError(
            f"config_overrides names {', '.join(unknown)}, which are not ParallelRunConfig fields"
        )
    try:
        return ParallelRunConfig(**{**values, **dict(overrides or {})})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def map_azure_job(
    path: str | os.PathLike[str],
    *,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    job: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    output_path: Any = None,
) -> AzureJobMapping:
    """Return what the Azure ML parallel job in the YAML file at ``path`` maps to, or raise ``ConfigError``.

    ``inputs`` and ``outputs`` map the job's input and output names to local paths or fsspec URLs
    (``input_data`` also to a dataset); ``output_path`` is needed only without ``task.append_row_to``.
    """
    parsed = read_parallel_job(path, job)
    where = parsed.source
    notes: list[str] = []
    _check_keys(where, parsed.fields, notes)
    dataset, arguments, place, kind = _resolved(parsed, inputs, outputs, notes)
    if output_path is not None and "output_path" in place:
        raise ConfigError(f"{where}: task.append_row_to sets the output; drop output_path= or append_row_to")
    output_path = place.pop("output_path", output_path)
    if output_path is None:
        raise ConfigError(
            f"{where}: the job has no task.append_row_to, so nothing says where the run writes; give "
            "output_path= (a local path or fsspec URL for the run's records and the files the script "
            "writes to EntryScript().output_dir)"
        )
    _check_mini_batch_size(where, parsed.fields.get("mini_batch_size"), dataset, kind)
    values = config_values(where, parsed.fields, arguments, dataset.tabular, notes)
    values.update(entry_script=_entry_script(where, parsed.fields["task"]), **place)
    config = _build_config(values, config_overrides, where)
    for note in notes:
        log.info("from_azure_yaml %s: %s", where, note)
    task_id = re.sub(r"[^A-Za-z0-9_-]", "_", parsed.name) if parsed.name else None
    tooltip = str(parsed.fields.get("description") or parsed.fields.get("display_name") or "")
    return AzureJobMapping(task_id, dataset, output_path, config, arguments, tooltip, tuple(notes))
