"""The inputs and outputs of an Azure ML v2 parallel job, and the ``${{inputs.x}}`` expressions naming them.

Azure reads ``azureml:name:1`` data assets and ``azureml://datastores/...`` paths through its own
services, which do not exist here; so each input or output the job uses must have a value that
can be read here: the one the DAG maps it to (``inputs={"name": path}``), else the YAML's own
path when it is a local path or an fsspec URL, else the YAML's literal value (numbers, strings).
A missing one is an error listing every such name at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_parallelrun.core.errors import ConfigError

#: ``${{ inputs.x }}``, ``${{outputs.y}}``: the expression syntax of Azure ML v2 YAML.
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")

_PATH_TYPES = {
    "inputs": {"uri_folder", "uri_file", "mltable", "custom_model", "mlflow_model", "triton_model"},
    "outputs": {"uri_folder", "uri_file", "mltable"},
}
_LITERAL_TYPES = {"string", "integer", "number", "boolean"}
_MODES = {
    "inputs": {"ro_mount", "download", "direct", "eval_mount", "eval_download"},
    "outputs": {"rw_mount", "upload", "direct"},
}
#: Keys of one input or output that describe it and change nothing here.
_DESCRIPTIVE = {"description", "optional", "min", "max", "enum", "datastore", "name", "version"}


@dataclass(frozen=True)
class Port:
    """One input or output as the YAML declares it: its type, a value usable here (or None), as written."""

    name: str
    type: str
    value: Any
    written: Any
    mode: str | None = None


def azure_only(value: Any) -> bool:
    """Tell whether a written value only Azure can read: a data asset, a datastore URI, an expression."""
    return isinstance(value, str) and (value.startswith("azureml:") or "${{" in value)


def _port(where: str, side: str, name: str, entry: Any) -> Port:
    if not isinstance(entry, Mapping):
        return Port(name, "literal", None if entry is None or azure_only(entry) else entry, entry)
    kind = str(entry.get("type", "uri_folder"))
    if unknown := sorted(set(entry) - {"type", "path", "mode", "default", "value", *_DESCRIPTIVE}):
        raise ConfigError(
            f"{where}: {side}.{name} has key(s) {', '.join(unknown)}, which have no equivalent; remove them"
        )
    if kind in _LITERAL_TYPES:
        value = entry.get("default", entry.get("value"))
        return Port(name, "literal", None if value is None or azure_only(value) else value, value)
    if kind not in _PATH_TYPES[side]:
        raise ConfigError(
            f"{where}: {side}.{name} has type {kind!r}; supported: "
            f"{', '.join(sorted(_PATH_TYPES[side] | _LITERAL_TYPES))}"
        )
    mode = entry.get("mode")
    if mode is not None and mode not in _MODES[side]:
        raise ConfigError(
            f"{where}: {side}.{name} has mode {mode!r}; Azure's modes are {', '.join(sorted(_MODES[side]))}"
        )
    path = entry.get("path")
    return Port(name, kind, None if path is None or azure_only(path) else path, path, mode)


def declared_ports(where: str, side: str, entries: Any) -> dict[str, Port]:
    """Return the job's ``inputs`` or ``outputs`` as ports, checked."""
    if entries is None:
        return {}
    if not isinstance(entries, Mapping):
        raise ConfigError(f"{where}: {side} must be a mapping of names to {side[:-1]} specifications")
    return {str(name): _port(where, side, str(name), entry) for name, entry in entries.items()}


def _how_to_map(side: str, ports: list[Port]) -> str:
    example = ", ".join(f"{port.name!r}: '/local/path or fsspec URL'" for port in ports)
    described = ", ".join(
        f"{port.name} ({port.type}, {repr(port.written) if port.written is not None else 'no path'})"
        for port in ports
    )
    return (
        f"{side} {described} have no value that can be read here (Azure data assets, datastore URIs "
        f"and pipeline expressions are Azure's own); map each: from_azure_yaml(..., {side}={{{example}}})"
    )


def resolve_ports(
    where: str, side: str, ports: Mapping[str, Port], given: Mapping[str, Any] | None, needed: list[str]
) -> dict[str, Any]:
    """Return the value of each ``needed`` port: as ``given``, else the YAML's own when usable here."""
    given = dict(given or {})
    if stray := sorted(set(given) - set(ports)):
        raise ConfigError(
            f"{where}: {side}={{{', '.join(map(repr, stray))}: ...}} names no {side[:-1]} of the job; "
            f"its {side}: {', '.join(sorted(ports)) or 'none'}"
        )
    if undeclared := sorted(set(needed) - set(ports)):
        raise ConfigError(
            f"{where}: the job refers to {', '.join('${{' + side + '.' + n + '}}' for n in undeclared)} but "
            f"declares no such {side[:-1]}; declare it under {side}:"
        )
    values = {name: given[name] if name in given else ports[name].value for name in dict.fromkeys(needed)}
    if missing := [ports[name] for name, value in values.items() if value is None]:
        raise ConfigError(f"{where}: {_how_to_map(side, missing)}")
    return values


def references(text: str, where: str, field: str) -> list[tuple[str, str]]:
    """Return the ``(side, name)`` of each ``${{inputs.x}}`` / ``${{outputs.y}}`` in ``text``.

    >>> references("--model ${{inputs.m}} --out ${{ outputs.o }}", "job.yml", "program_arguments")
    [('inputs', 'm'), ('outputs', 'o')]
    """
    found = []
    for expression in EXPRESSION.findall(text):
        side, _, name = expression.partition(".")
        if side not in ("inputs", "outputs") or not name or "." in name:
            raise ConfigError(
                f"{where}: {field} holds ${{{{{expression}}}}}, which only Azure can resolve; use "
                "${{inputs.<name>}} or ${{outputs.<name>}}, or write the value itself"
            )
        found.append((side, name))
    return found


def as_text(value: Any) -> str:
    """Return how a value reads in the entry script's arguments: a dataset by its path, others as str()."""
    path = getattr(value, "path", None)
    if path is not None and hasattr(value, "tabular"):
        return str(path)
    return str(value)


def substitute(text: str, values: Mapping[tuple[str, str], Any]) -> str:
    """Return ``text`` with each ``${{inputs.x}}`` / ``${{outputs.y}}`` replaced by its value."""

    def one(match: re.Match[str]) -> str:
        side, _, name = match.group(1).partition(".")
        return as_text(values[(side, name)])

    return EXPRESSION.sub(one, text)


def url_notes(ports: Mapping[str, Port], values: Mapping[str, Any]) -> list[str]:
    """Note each input Azure would mount or download that is passed to the script as a URL here."""
    return [
        f"inputs.{name}: the entry script receives the URL {value!r} as it is (Azure would "
        f"{'download' if ports[name].mode == 'download' else 'mount'} it); map it to a local path if "
        "the script opens it as a file"
        for name, value in values.items()
        if isinstance(value, str)
        and "://" in value
        and ports[name].mode in (None, "ro_mount", "download")
        and ports[name].type != "literal"
    ]
