"""Describe the input of a parallel run: a folder of files or a table split over files."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.formats import FORMATS
from airflow_parallelrun.core.inputs.partition_format import PartitionFormat
from airflow_parallelrun.core.inputs.paths import is_relative_glob
from airflow_parallelrun.core.sql.source import SqlDataset


def storage_path(kind: str, field: str, path: Any, conn_id: str | None) -> tuple[Any, str | None]:
    """Return ``(url, conn_id)`` of a path given as Airflow's ``ObjectStoragePath``; other values as given.

    ``ObjectStoragePath("s3://aws_default@bucket/in")`` carries its Connection: the path becomes
    ``s3://bucket/in`` and the Connection ``aws_default``, unless ``conn_id`` names another one.
    """
    if isinstance(path, str) or not (hasattr(path, "protocol") and hasattr(path, "storage_options")):
        return path, conn_id
    url = f"{path.protocol}://{path.path}"
    # Airflow 3.2 and later: ``conn_id``; 3.1 keeps it in the path's storage options.
    named = getattr(path, "conn_id", None) or dict(path.storage_options or {}).get("conn_id")
    if named and conn_id and named != conn_id:
        raise ConfigError(
            f"{kind} {field}={str(path)!r} names the Connection {named!r} but the conn_id given is "
            f"{conn_id!r}; name one of them"
        )
    return url, named or conn_id


def _take_storage_path(dataset: Any, kind: str) -> None:
    path, conn_id = storage_path(kind, "path", dataset.path, dataset.conn_id)
    object.__setattr__(dataset, "path", path)
    object.__setattr__(dataset, "conn_id", conn_id)


def _check_source(kind: str, path: Any, files: Any, pattern: Any) -> None:
    if path is None and files is None:
        raise ConfigError(
            f"{kind} needs an input: give path='<folder or URL>' (with an optional pattern), "
            "files=[<file paths>], or both (files inside the folder path)"
        )
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"{kind} path={path!r} must be a string (a local path or an fsspec URL)")
    if pattern is not None and not is_relative_glob(pattern):
        raise ConfigError(
            f"{kind} pattern={pattern!r} must be a glob relative to path, without '..', "
            "e.g. pattern='**/*.png'"
        )


def files_from_rendered(value: Any) -> Any:
    """Return a rendered ``files`` value as a list: a string must hold a JSON list of paths.

    A Jinja template renders to a string, so ``files="{{ ... | tojson }}"`` arrives as JSON.

    >>> files_from_rendered('["/in/a.png", "/in/b.png"]'), files_from_rendered(["/in/a.png"])
    (['/in/a.png', '/in/b.png'], ['/in/a.png'])
    """
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list):
        raise ConfigError(
            f"files={value[:200]!r} is a string but not a JSON list of paths; give a list, an upstream "
            "task's output (e.g. files=sensor.output), or a template rendering a JSON list "
            "(e.g. files=TRIGGERING_FILES, or '{{ ... | tojson }}')"
        )
    return parsed


@dataclass(frozen=True)
class FileDataset:
    """Files under ``path`` matching ``pattern``, or an explicit list of ``files``.

    With both, ``files`` name files inside the folder ``path`` (relative to it, or absolute
    inside it), and one outside it is refused. Each item is one file; ``run()`` receives a list
    of local file paths (remote files are fetched to a local scratch folder first). ``path``
    and ``files`` are templated by the operator, so Params, macros and an upstream task's output
    (``files=sensor.output`` of a ``NewFilesSensor``) work; a template for ``files`` renders a
    string, which must hold a JSON list (``files=TRIGGERING_FILES`` takes the files of the asset
    events that triggered the run). A file that ``files`` names more than once is scored once,
    at its first place; the repeats are logged and listed in the summary as
    ``duplicate_inputs_dropped``. ``conn_id`` names an Airflow Connection holding the storage's
    credentials; ``path`` may also be an ``ObjectStoragePath`` that names it
    (``ObjectStoragePath("s3://aws_default@bucket/in")``). ``partition_format`` (Azure's, e.g.
    ``"{Store}/{Brand}/*.csv"``) says which keys each file's path holds, relative to ``path``;
    ``ParallelRunConfig(partition_keys=[...])`` then makes one mini-batch of each key group's files.
    """

    path: str | None = None
    pattern: str = "**/*"
    files: Sequence[str] | Any | None = None
    conn_id: str | None = None
    partition_format: str | None = None

    def __post_init__(self) -> None:
        _take_storage_path(self, "FileDataset")
        _check_source("FileDataset", self.path, self.files, self.pattern)
        if self.partition_format is not None:
            PartitionFormat(self.partition_format)  # raises ConfigError naming what is wrong

    @property
    def tabular(self) -> bool:
        return False

    def with_source(self, path: str | None, files: Sequence[str] | None) -> FileDataset:
        """Return a copy with rendered ``path`` and ``files``."""
        return dataclasses.replace(self, path=path, files=files)


@dataclass(frozen=True)
class TabularDataset:
    """A table stored in csv, tsv, parquet or jsonl files under ``path``.

    Each item is a row; ``run()`` receives a pandas DataFrame. A big file is split into several
    mini-batches (parquet by row groups or rows, text formats by byte ranges cut at line ends);
    a mini-batch never crosses a file boundary. csv and tsv files have a header line. Text
    splitting assumes no quoted field holds a line break. ``conn_id`` names an Airflow
    Connection holding the storage's credentials.
    """

    path: str | None = None
    format: str = "csv"
    pattern: str | None = None
    files: Sequence[str] | Any | None = None
    conn_id: str | None = None

    def __post_init__(self) -> None:
        _take_storage_path(self, "TabularDataset")
        _check_source("TabularDataset", self.path, self.files, self.pattern)
        if self.format not in FORMATS:
            raise ConfigError(
                f"TabularDataset format={self.format!r} is not supported; use one of {', '.join(FORMATS)}"
            )
        if self.pattern is None:
            object.__setattr__(self, "pattern", f"**/*.{self.format}")

    @property
    def tabular(self) -> bool:
        return True

    def with_source(self, path: str | None, files: Sequence[str] | None) -> TabularDataset:
        """Return a copy with rendered ``path`` and ``files``."""
        return dataclasses.replace(self, path=path, files=files)


Dataset = FileDataset | TabularDataset | SqlDataset


def check_partition_keys_fit(dataset: Dataset, keys: Sequence[str] | None) -> None:
    """Refuse ``partition_keys`` a dataset cannot group by: a FileDataset takes its format's keys only."""
    if keys is None or not isinstance(dataset, FileDataset):
        return
    if dataset.partition_format is None:
        raise ConfigError(
            f"partition_keys={list(keys)!r} with a FileDataset needs the dataset's partition_format, which "
            "says where each key is in a file's path: give FileDataset(path=..., partition_format="
            f"'{'/'.join('{' + k + '}' for k in keys)}/*'), as Azure's partition_format"
        )
    known = PartitionFormat(dataset.partition_format).keys
    if missing := [key for key in keys if key not in known]:
        raise ConfigError(
            f"partition_keys {missing!r} are not keys of partition_format={dataset.partition_format!r} "
            f"(its keys: {list(known)!r}); name only those, or add them to the format"
        )
