"""Map the settings of an Azure ML v2 parallel job onto ParallelRunConfig's fields, with Azure's defaults.

Azure's field (its default) -> the field here:

- ``mini_batch_size`` (1) -> ``mini_batch_size``: files; for a table bytes, 1MB when absent
- ``mini_batch_error_threshold`` (-1, ignore) -> ``allowed_failed_count`` (None for -1)
- ``error_threshold``, or the program argument ``--error_threshold`` (-1) -> ``error_threshold``
- ``--allowed_failed_percent`` (100) -> ``allowed_failed_percent``
- ``retry_settings.max_retries`` (2 retries) -> ``run_max_try`` = retries + 1, tries in all
- ``retry_settings.timeout`` (60 s) -> ``run_invocation_timeout``
- ``resources.instance_count`` (1) -> ``node_count``
- ``max_concurrency_per_instance`` (the node's cores) -> ``process_count_per_node`` (None: CPUs)
- ``logging_level`` (INFO) -> ``logging_level``; ``environment_variables`` -> the same, as strings
- ``partition_keys`` -> ``partition_keys`` (over ``mini_batch_size``, as in Azure)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ConfigError

#: Azure's predefined program arguments (read by Azure's own driver, also seen by the entry script)
#: that map onto a field here, or why they change nothing.
_PREDEFINED = {
    "--error_threshold": "error_threshold",
    "--allowed_failed_percent": "allowed_failed_percent",
    "--progress_update_timeout": "progress_update_timeout",
    "--resource_monitor_interval": "resource_monitor_interval",
}
_PREDEFINED_NOTES = {
    "--task_overhead_timeout": "a mini-batch is read in its run task; execution_timeout bounds that task",
    "--first_task_creation_timeout": "Airflow's scheduler starts the tasks; dagrun_timeout bounds a run",
    "--copy_logs_to_parent": "each task instance's log holds its mini-batches' output",
    "--metrics_name_prefix": "no metrics are pushed; see _parallelrun/summary.json",
    "--push_metrics_to_parent": "no metrics are pushed; see _parallelrun/summary.json",
}
_RESOURCE_NOTES = {
    "instance_type": "the Airflow workers the run tasks are routed to (queue=) decide the machine",
    "shm_size": "no equivalent",
    "properties": "no equivalent",
}


def _field_names() -> set[str]:
    return {f.name for f in fields(ParallelRunConfig)}


def _number(where: str, key: str, value: Any, kind: type = int, low: float | None = None) -> Any:
    """Return ``value`` as a number of ``kind``; refuse an expression or text by the field's name."""
    try:
        number = kind(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or (low is not None and number < low):
        raise ConfigError(
            f"{where}: {key}={value!r} is not {'an integer' if kind is int else 'a number'}"
            f"{f' >= {low}' if low is not None else ''}; write the value itself (pipeline expressions "
            "such as ${{parent.inputs.x}} are Azure's), or set it with config_overrides={...}"
        )
    return number


def _predefined(where: str, arguments: list[str], notes: list[str]) -> dict[str, Any]:
    """Return the config values Azure's predefined program arguments set; note those without an equivalent."""
    values: dict[str, Any] = {}
    names = _field_names()
    for index, token in enumerate(arguments):
        flag, equals, inline = token.partition("=")
        value = inline if equals else (arguments[index + 1] if index + 1 < len(arguments) else None)
        if flag in _PREDEFINED_NOTES:
            notes.append(f"program argument {flag} ignored: {_PREDEFINED_NOTES[flag]}")
        elif flag in _PREDEFINED:
            field = _PREDEFINED[flag]
            if field not in names:
                notes.append(f"program argument {flag} ignored: this installation has no {field} setting")
                continue
            kind = int if field == "error_threshold" else float
            values[field] = _number(where, f"task.program_arguments {flag}", value, kind)
    return values


def _retries(where: str, job: Mapping[str, Any]) -> dict[str, Any]:
    retry = job.get("retry_settings") or {}
    if not isinstance(retry, Mapping) or set(retry) - {"max_retries", "timeout"}:
        raise ConfigError(f"{where}: retry_settings={retry!r} may hold max_retries and timeout only")
    retries = _number(where, "retry_settings.max_retries", retry.get("max_retries", 2), int, 0)
    timeout = _number(where, "retry_settings.timeout", retry.get("timeout", 60), int, 1)
    return {"run_max_try": retries + 1, "run_invocation_timeout": timeout}


def _resources(where: str, job: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    resources = job.get("resources") or {}
    if not isinstance(resources, Mapping):
        raise ConfigError(f"{where}: resources={resources!r} must be a mapping (instance_count: N)")
    for key in resources:
        if key in _RESOURCE_NOTES:
            notes.append(f"resources.{key} ignored: {_RESOURCE_NOTES[key]}")
        elif key != "instance_count":
            raise ConfigError(f"{where}: resources.{key} has no equivalent; remove it")
    concurrency = job.get("max_concurrency_per_instance")
    return {
        "node_count": _number(where, "resources.instance_count", resources.get("instance_count", 1), int, 1),
        "process_count_per_node": None
        if concurrency is None
        else _number(where, "max_concurrency_per_instance", concurrency, int, 1),
    }


def _thresholds(where: str, job: Mapping[str, Any], predefined: dict[str, Any]) -> dict[str, Any]:
    items = job.get("error_threshold")
    items = -1 if items is None else _number(where, "error_threshold", items, int, -1)
    if (
        "error_threshold" in predefined
        and "error_threshold" in job
        and predefined["error_threshold"] != items
    ):
        raise ConfigError(
            f"{where}: error_threshold={items} and program argument --error_threshold "
            f"{predefined['error_threshold']} disagree; keep one"
        )
    batches = job.get("mini_batch_error_threshold")
    batches = -1 if batches is None else _number(where, "mini_batch_error_threshold", batches, int, -1)
    return {
        "error_threshold": predefined.pop("error_threshold", items),
        "allowed_failed_count": None if batches == -1 else batches,
        "allowed_failed_percent": predefined.pop("allowed_failed_percent", None),
    }


def _partitioning(where: str, job: Mapping[str, Any], tabular: bool, notes: list[str]) -> dict[str, Any]:
    """Return ``mini_batch_size``, or ``partition_keys`` (which take effect over a size, as in Azure)."""
    size = job.get("mini_batch_size")
    keys = job.get("partition_keys")
    if keys is None:
        if size is None:
            return {"mini_batch_size": None if tabular else "1"}
        return {"mini_batch_size": str(size)}
    if size is not None:
        notes.append(f"mini_batch_size={size!r} ignored: partition_keys take effect, as in Azure")
    return {"partition_keys": [str(key) for key in keys]}


def config_values(
    where: str, job: Mapping[str, Any], arguments: list[str], tabular: bool, notes: list[str]
) -> dict[str, Any]:
    """Return ParallelRunConfig's keyword arguments for the job's settings (not its script or output)."""
    predefined = _predefined(where, arguments, notes)
    environment = job.get("environment_variables") or {}
    if not isinstance(environment, Mapping):
        raise ConfigError(
            f"{where}: environment_variables={environment!r} must be a mapping of names to values"
        )
    values = {
        **_partitioning(where, job, tabular, notes),
        **_thresholds(where, job, predefined),
        **_retries(where, job),
        **_resources(where, job, notes),
        "logging_level": str(job.get("logging_level", "INFO")).upper(),
        "environment_variables": {str(k): "" if v is None else str(v) for k, v in environment.items()},
    }
    return {**values, **predefined}
