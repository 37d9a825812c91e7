"""Turn an Azure ML ``MLTable`` file into the dataset it describes: a table or a list of files.

Azure's parallel job splits an ``mltable`` input as a table when its ``MLTable`` file reads the
files (a ``read_delimited``, ``read_parquet`` or ``read_json_lines`` transformation), and as a
list of files otherwise. The same rule applies here: csv and tsv (``read_delimited`` with a ","
or a tab delimiter), parquet and jsonl become a ``TabularDataset``; no reading transformation
gives a ``FileDataset``. Other transformations (``take``, ``filter``, ``keep_columns``, ...) have
no equivalent and are refused by name, as are reading options this engine does not honour.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

import fsspec
import yaml

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.datasets import FileDataset, TabularDataset

_READERS = {"read_delimited", "read_parquet", "read_json_lines"}
_DELIMITERS = {",": "csv", "\t": "tsv"}
#: read_delimited options that change nothing here (pandas infers the column types itself).
_HARMLESS_OPTIONS = {"delimiter", "header", "encoding", "infer_column_types", "empty_as_string"}
_HEADERS = {"all_files_same_headers", "from_first_file"}
_ENCODINGS = {"utf8", "utf-8", "ascii"}


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def read_mltable_file(path: str) -> tuple[dict[str, Any], str]:
    """Return the parsed ``MLTable`` file at ``path`` (the file, or the folder holding it) and its folder."""
    if "{{" in path:
        raise ConfigError(
            f"the mltable input's path {path!r} is a template, so its MLTable file cannot be read when the "
            "DAG is parsed; map the input to TabularDataset(path=..., format=...) or FileDataset(path=...)"
        )
    file = path if posixpath.basename(path.rstrip("/")) == "MLTable" else posixpath.join(path, "MLTable")
    try:
        with fsspec.open(file, "r", encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read the MLTable file {file!r} of the mltable input ({type(exc).__name__}: {exc}); "
            "map the input to the folder holding it, or to TabularDataset(path=..., format=...) "
            "(csv, tsv, parquet or jsonl) when the folder has no MLTable file"
        ) from exc
    if not isinstance(content, Mapping):
        raise ConfigError(f"the MLTable file {file!r} does not hold a mapping (paths:, transformations:)")
    return dict(content), posixpath.dirname(file)


def _table_format(where: str, transformations: list[Any]) -> str | None:
    """Return the table format the transformations read (csv, tsv, parquet, jsonl), or None for files."""
    found: str | None = None
    for step in transformations:
        name, options = next(iter(step.items())) if isinstance(step, Mapping) else (step, None)
        if name not in _READERS:
            raise _fail(
                where,
                f"transformation {name!r} has no equivalent here; apply it inside run() or prepare the "
                "files before the run, and keep only read_delimited, read_parquet or read_json_lines",
            )
        found = _reader_format(where, name, dict(options or {}))
    return found


def _reader_format(where: str, name: str, options: dict[str, Any]) -> str:
    if name == "read_parquet":
        return "parquet"
    if name == "read_json_lines":
        unknown = sorted(set(options) - {"encoding", "invalid_lines"})
        if unknown:
            raise _fail(
                where, f"read_json_lines option(s) {', '.join(unknown)} are not supported; remove them"
            )
        return "jsonl"
    unknown = sorted(set(options) - _HARMLESS_OPTIONS)
    if unknown:
        raise _fail(
            where,
            f"read_delimited option(s) {', '.join(unknown)} are not supported here (rows may not span lines, "
            "no path column is added); remove them",
        )
    delimiter = options.get("delimiter", ",")
    if delimiter not in _DELIMITERS:
        raise _fail(
            where, f"read_delimited delimiter={delimiter!r} is not supported; use ',' (csv) or '\\t' (tsv)"
        )
    if options.get("header", "all_files_same_headers") not in _HEADERS:
        raise _fail(
            where,
            f"read_delimited header={options['header']!r} is not supported: every file needs its own header "
            "line with the same columns (all_files_same_headers)",
        )
    if str(options.get("encoding", "utf8")).lower() not in _ENCODINGS:
        raise _fail(
            where, f"read_delimited encoding={options['encoding']!r} is not supported; files must be UTF-8"
        )
    return _DELIMITERS[delimiter]


def _relative(where: str, value: Any) -> str:
    text = str(value)
    if "://" in text or text.startswith(("/", "azureml:")):
        raise _fail(where, f"path {text!r} is not relative to the MLTable file's folder; make it relative")
    return posixpath.normpath(text.removeprefix("./"))


def _source(where: str, base: str, paths: Any) -> dict[str, Any]:
    """Return the dataset's ``path``/``files``/``pattern`` for the MLTable's ``paths`` entries."""
    entries = [dict(entry) for entry in paths or [] if isinstance(entry, Mapping)]
    kinds = {kind for entry in entries for kind in entry if kind in ("file", "folder", "pattern")}
    if not entries or len(kinds) != 1 or len(entries) != len(paths):
        raise _fail(
            where,
            f"paths={paths!r} must be a list of entries of one kind: file: (one or more), folder: or "
            "pattern: (one); split the input into separate runs otherwise",
        )
    kind = kinds.pop()
    if kind == "file":
        return {"path": base, "files": [_relative(where, entry["file"]) for entry in entries]}
    if len(entries) > 1:
        raise _fail(where, f"paths has {len(entries)} {kind}: entries; give one folder: or one pattern:")
    value = _relative(where, entries[0][kind])
    if kind == "folder":
        return {"path": posixpath.join(base, value) if value != "." else base}
    return {"path": base, "pattern": value}


def mltable_dataset(path: str) -> FileDataset | TabularDataset:
    """Return the dataset the ``MLTable`` file at ``path`` describes, as Azure's parallel job splits it."""
    content, base = read_mltable_file(path)
    where = f"MLTable file in {base!r}"
    known = {"paths", "transformations", "type", "$schema"}
    if unknown := sorted(set(content) - known):
        raise _fail(
            where, f"key(s) {', '.join(unknown)} are not supported; keep only paths and transformations"
        )
    fmt = _table_format(where, list(content.get("transformations") or []))
    source = _source(where, base, content.get("paths"))
    if fmt is None:
        return FileDataset(**source)
    return TabularDataset(format=fmt, **source)
