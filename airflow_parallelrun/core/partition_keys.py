"""``partition_keys``, as Azure ML reads it: one mini-batch per key group, never with a size."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sizes import MiniBatchSize


class _Partitioning(Protocol):
    @property
    def partition_keys(self) -> Sequence[str] | None: ...
    @property
    def mini_batch_size(self) -> str | int | MiniBatchSize | None: ...


def partition_keys_of(value: Any) -> tuple[str, ...] | None:
    """Return ``partition_keys`` as a tuple of column or path keys; raise ``ConfigError`` if it is not one.

    Azure's pipeline parameters carry the list as JSON text, so a JSON list is taken too.

    >>> partition_keys_of(["Store", "Brand"]), partition_keys_of('["Store"]'), partition_keys_of(None)
    (('Store', 'Brand'), ('Store',), None)
    """
    if value is None:
        return None
    keys = value
    if isinstance(value, str):
        try:
            keys = json.loads(value)
        except ValueError:
            keys = None
    if (
        not isinstance(keys, (list, tuple))
        or not keys
        or not all(isinstance(key, str) and key.strip() for key in keys)
        or len(set(keys)) != len(keys)
    ):
        raise ConfigError(
            f"partition_keys={value!r} must be a non-empty list of distinct key names, e.g. "
            "partition_keys=['Store', 'Brand']: columns of a TabularDataset or SqlDataset, or the "
            "{keys} of a FileDataset's partition_format"
        )
    return tuple(keys)


def check_partition_keys(config: _Partitioning) -> None:
    """Refuse ``partition_keys`` with ``mini_batch_size``: as in Azure ML, they exclude each other."""
    if config.partition_keys is not None and config.mini_batch_size is not None:
        size = config.mini_batch_size
        shown = f"{size.value} {size.unit}" if isinstance(size, MiniBatchSize) else repr(size)
        raise ConfigError(
            f"partition_keys={list(config.partition_keys)!r} and mini_batch_size={shown} exclude each "
            "other (as in Azure ML): with partition_keys each mini-batch is one whole key group, "
            "whatever its size. Remove mini_batch_size, or remove partition_keys to cut mini-batches by size"
        )
