"""Read an Azure ML v2 parallel job from its YAML file: the job itself, or the parallel step of a pipeline.

A file may hold a parallel job or component (``type: parallel``) or a pipeline job (``type:
pipeline``) whose ``jobs:`` hold one parallel step, inline or as ``component: ./file.yml``. Paths
written in the file are relative to the file that writes them, as ``az ml job create`` uploads
them; this module makes them absolute, so the mapping never has to know which file said what.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from airflow_parallelrun.core.errors import ConfigError


@dataclass(frozen=True)
class ParallelJobFile:
    """One parallel job as its YAML says it: the merged fields, the job's name and the file's folder."""

    fields: dict[str, Any]
    name: str | None
    folder: str
    source: str


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the Azure ML job file {path!r}: {exc}; give the path of the job YAML"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(content, Mapping):
        raise ConfigError(
            f"{path}: holds {type(content).__name__}, not a job (a mapping with type: parallel)"
        )
    return dict(content)


def _pick_step(path: str, pipeline: Mapping[str, Any], job: str | None) -> tuple[str, dict[str, Any]]:
    """Return the name and fields of the pipeline's parallel step: the one there is, or ``job``."""
    jobs = pipeline.get("jobs") or {}
    parallel = [
        name for name, step in jobs.items() if isinstance(step, Mapping) and step.get("type") == "parallel"
    ]
    if job is not None:
        if job not in parallel:
            raise ConfigError(
                f"{path}: job={job!r} is not a parallel step of this pipeline; its parallel steps: "
                f"{', '.join(parallel) or 'none'}"
            )
        return job, dict(jobs[job])
    if len(parallel) != 1:
        raise ConfigError(
            f"{path}: the pipeline has {len(parallel)} parallel steps ({', '.join(parallel) or 'none'}); "
            "name the one to port with job='<name>' (its other steps are not ported: run them as tasks "
            "of their own)"
        )
    return parallel[0], dict(jobs[parallel[0]])


def _absolute(folder: str, value: Any) -> Any:
    """Return a local path written in a YAML file as an absolute path; URLs and expressions as they are."""
    if (
        not isinstance(value, str)
        or "://" in value
        or value.startswith(("azureml:", "${{"))
        or os.path.isabs(value)
    ):
        return value
    return os.path.normpath(os.path.join(folder, value))


def _with_absolute_paths(fields: dict[str, Any], folder: str) -> dict[str, Any]:
    """Return ``fields`` with the local paths of its inputs, outputs and ``task.code`` made absolute."""
    fields = dict(fields)
    for side in ("inputs", "outputs"):
        entries = dict(fields.get(side) or {})
        for name, entry in entries.items():
            if isinstance(entry, Mapping) and "path" in entry:
                entries[name] = {**entry, "path": _absolute(folder, entry["path"])}
        if entries:
            fields[side] = entries
    task = fields.get("task")
    if isinstance(task, Mapping):
        fields["task"] = {**task, "code": _absolute(folder, task.get("code") or ".")}
    return fields


def _merge_side(declared: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a component's input (or output) declarations with the values a pipeline step gives them."""
    merged: dict[str, Any] = {}
    for name in {**declared, **given}:
        decl, value = declared.get(name), given.get(name)
        if not isinstance(decl, Mapping):
            merged[name] = value if name in given else decl
        elif isinstance(value, Mapping):
            merged[name] = {**decl, **value}
        elif name in given and decl.get("type") in ("string", "integer", "number", "boolean"):
            merged[name] = {**decl, "default": value}
        elif name in given:
            merged[name] = {**decl, "path": value}
        else:
            merged[name] = dict(decl)
    return merged


def _with_component(path: str, folder: str, step: dict[str, Any]) -> dict[str, Any]:
    """Return a pipeline step naming ``component: ./file.yml`` with the component's fields under its own."""
    reference = step.pop("component")
    if not isinstance(reference, str) or reference.startswith("azureml:") or "://" in reference:
        raise ConfigError(
            f"{path}: component={reference!r} is a registered component, which cannot be read here; save its "
            "YAML next to the pipeline and write component: ./<file>.yml"
        )
    component_path = os.path.join(folder, reference)
    component = _with_absolute_paths(_load(component_path), os.path.dirname(component_path))
    merged = {**component, **{k: v for k, v in step.items() if k not in ("inputs", "outputs")}}
    for side in ("inputs", "outputs"):
        merged[side] = _merge_side(component.get(side) or {}, step.get(side) or {})
    merged.pop("version", None)
    return merged


def read_parallel_job(path: str | os.PathLike[str], job: str | None = None) -> ParallelJobFile:
    """Return the parallel job that the YAML file at ``path`` describes, with absolute local paths."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    content = _load(path)
    kind = content.get("type")
    if kind == "pipeline":
        name, step = _pick_step(path, content, job)
        step = _with_absolute_paths(step, folder)
        if "component" in step:
            step = _with_component(path, folder, step)
        return ParallelJobFile(step, name, folder, path)
    if kind != "parallel":
        raise ConfigError(
            f"{path}: type={kind!r}; from_azure_yaml ports a parallel job (type: parallel) or a pipeline "
            "(type: pipeline) with a parallel step; other job types have no equivalent here"
        )
    if job is not None:
        raise ConfigError(
            f"{path}: job={job!r} names a pipeline step, but this file holds one parallel job; drop job="
        )
    return ParallelJobFile(_with_absolute_paths(content, folder), content.get("name"), folder, path)
