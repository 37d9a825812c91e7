"""Read ``models={"name[:version]": "path or URL"}``: one checked reference per model.

Azure ML names a registered model by its name and an integer version; an entry script asks for
it by name (``Model.get_model_path("mnist-prs")``, the latest version) or by both. A key without
a version means version 1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from airflow_parallelrun.core.errors import ConfigError

#: What Azure accepts as a model name, less what could escape a folder ("/", a leading dot).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_EXAMPLE = "e.g. {'mnist-prs': '/models/mnist'} or {'mnist-prs:2': 's3://bucket/models/mnist'}"


@dataclass(frozen=True)
class ModelRef:
    """One model of the run: its name, its version (digits) and where its file or folder is."""

    name: str
    version: str
    source: str

    @property
    def is_remote(self) -> bool:
        """Tell whether the source is a URL to download (``file://`` is a local path)."""
        return "://" in self.source and not self.source.startswith("file://")

    @property
    def local_path(self) -> str:
        """Return the source as a local path (``file://`` stripped)."""
        return self.source[len("file://") :] if self.source.startswith("file://") else self.source


def parse_key(key: object) -> tuple[str, str]:
    """Return the name and version of a ``models`` key; raise ``ConfigError`` naming it if invalid.

    >>> parse_key("mnist-prs"), parse_key("mnist-prs:3")
    (('mnist-prs', '1'), ('mnist-prs', '3'))
    >>> parse_key("mnist:latest")
    Traceback (most recent call last):
    ...
    airflow_parallelrun.core.errors.ConfigError: models key 'mnist:latest' is invalid: ...
    """
    text = key if isinstance(key, str) else ""
    name, _, version = text.partition(":")
    version = version or "1"
    if not _NAME.fullmatch(name) or not version.isdigit() or int(version) < 1:
        raise ConfigError(
            f"models key {key!r} is invalid: expected a model name (letters, digits, '-', '_', '.') "
            f"optionally followed by ':' and a version number >= 1; {_EXAMPLE}"
        )
    return name, str(int(version))


def model_refs(models: object) -> list[ModelRef]:
    """Return the models of a ``models`` mapping, checked, in the order given.

    Raise ``ConfigError`` for a value that is not a mapping, a bad key, an empty or non-text
    source, or one name and version given twice ("m" and "m:1").
    """
    if not isinstance(models, Mapping):
        raise ConfigError(
            f"models is of type {type(models).__name__}, not a mapping of model names to paths; {_EXAMPLE}"
        )
    refs: dict[tuple[str, str], ModelRef] = {}
    for key, source in models.items():
        name, version = parse_key(key)
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(
                f"models[{key!r}]={source!r} is not a path: give the model's file or folder as a local "
                f"path or an fsspec URL; {_EXAMPLE}"
            )
        if (name, version) in refs:
            raise ConfigError(
                f"models names {name!r} version {version} twice (key {key!r}); give each name and "
                "version once (a key without ':version' is version 1)"
            )
        refs[(name, version)] = ModelRef(name, version, source)
    return list(refs.values())


def resolve_local_sources(models: Mapping[str, str], folder: str | None) -> dict[str, str]:
    """Return ``models`` with relative local paths made absolute against ``folder`` (the DAG's)."""
    resolved = {}
    for key, source in models.items():
        relative = isinstance(source, str) and "://" not in source and not os.path.isabs(source)
        resolved[key] = os.path.join(folder or os.getcwd(), source) if relative else source
    return resolved


class ModelError(ConfigError):
    """A model of the run cannot be staged on this node: its path is missing or its store failed."""
