"""Parse mini-batch sizes the way Azure ML spells them.

>>> parse_mini_batch_size("10", tabular=False)
MiniBatchSize(unit='files', value=10)
>>> parse_mini_batch_size("1MB", tabular=True)
MiniBatchSize(unit='bytes', value=1048576)
>>> parse_mini_batch_size("500 KB", tabular=True)
MiniBatchSize(unit='bytes', value=512000)
>>> parse_mini_batch_size("2000 rows", tabular=True)
MiniBatchSize(unit='rows', value=2000)
>>> parse_mini_batch_size("0", tabular=False)
Traceback (most recent call last):
...
airflow_parallelrun.core.errors.ConfigError: mini_batch_size='0' must be at least 1; ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from airflow_parallelrun.core.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
_PATTERN = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
_ANY_SUFFIX = frozenset({*_UNITS, "ROWS", "ROW", "FILES", "FILE"})

DEFAULT_FILES = 10
DEFAULT_BYTES = 1024**2


@dataclass(frozen=True)
class MiniBatchSize:
    """How big one mini-batch is: a count of files, a number of bytes, or a number of rows."""

    unit: Literal["files", "bytes", "rows"]
    value: int


def parse_mini_batch_size(size: str | int | None, *, tabular: bool) -> MiniBatchSize:
    """Turn ``mini_batch_size`` into a unit and a positive value.

    Files take a count ("10"). Tabular input takes bytes ("1MB", "500KB", "1024"; KB/MB/GB are
    powers of 1024 as in Azure ML) or a row count ("2000 rows").
    """
    if size is None:
        return MiniBatchSize("bytes", DEFAULT_BYTES) if tabular else MiniBatchSize("files", DEFAULT_FILES)
    text = str(size)
    example = 'mini_batch_size="1MB" or "5000 rows"' if tabular else 'mini_batch_size="10"'
    match = _PATTERN.match(text)
    if not match:
        raise ConfigError(
            f"mini_batch_size={text!r} is not a size; expected a whole number"
            f"{' with an optional KB, MB, GB or rows suffix' if tabular else ' of files'}, e.g. {example}"
        )
    number, suffix = int(match.group(1)), match.group(2).upper()
    if tabular and suffix in ("ROWS", "ROW"):
        unit: Literal["files", "bytes", "rows"] = "rows"
        value = number
    elif tabular and suffix in _UNITS:
        unit, value = "bytes", number * _UNITS[suffix]
    elif not tabular and suffix in ("", "FILES", "FILE"):
        unit, value = "files", number
    else:
        allowed = "KB, MB, GB or rows" if tabular else "no suffix (a count of files)"
        raise ConfigError(
            f"mini_batch_size={text!r} has an unknown unit {match.group(2)!r}; allowed: {allowed}; "
            f"e.g. {example}"
        )
    if value < 1:
        what = "a positive number of files" if unit == "files" else f"a positive number of {unit}"
        raise ConfigError(f"mini_batch_size={text!r} must be at least 1; give {what}, e.g. {example}")
    return MiniBatchSize(unit, value)


def is_mini_batch_size(size: str | int) -> bool:
    """Tell whether ``size`` reads as a mini-batch size for some kind of dataset, files or tabular.

    >>> [is_mini_batch_size(s) for s in ("10", "1MB", "5000 rows", 3, "0", "10XB", "ten")]
    [True, True, True, True, False, False, False]
    """
    match = _PATTERN.match(str(size))
    return match is not None and int(match.group(1)) >= 1 and match.group(2).upper() in _ANY_SUFFIX


def fits(size: MiniBatchSize, *, tabular: bool) -> bool:
    """Tell whether a parsed size is in a unit the dataset kind takes (files, or bytes and rows)."""
    return (size.unit != "files") == tabular
