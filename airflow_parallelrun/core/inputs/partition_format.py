"""Read partition keys from file paths, as Azure ML's ``partition_format`` does (``{Store}/{Brand}/*.csv``).

A format is matched against the end of a file's path relative to the dataset's folder: ``{name}``
takes one path segment (its text is the key's value), ``{name:yyyy/MM/dd}`` takes a date laid
out so (its value is the text as in the path, e.g. ``"2019/01/01"``: Azure makes a datetime of
it, we leave the parsing to ``run()``), ``*`` any part of one segment and ``**`` any number of
segments.

>>> fmt = PartitionFormat("{Store}/{Brand}/*.csv")
>>> fmt.keys
('Store', 'Brand')
>>> fmt.values_of("s1/b2/day1.csv"), fmt.values_of("in/s1/b2/day1.csv"), fmt.values_of("s1/day1.csv")
({'Store': 's1', 'Brand': 'b2'}, {'Store': 's1', 'Brand': 'b2'}, None)
>>> PartitionFormat("/{Department}/{PartitionDate:yyyy/MM/dd}/data.parquet").values_of(
...     "Accounts/2019/01/01/data.parquet")
{'Department': 'Accounts', 'PartitionDate': '2019/01/01'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from airflow_parallelrun.core.errors import ConfigError

_TOKEN = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}|\*\*|\*|\?")
_DATE_PARTS = re.compile(r"yyyy|MM|dd|HH|mm|ss")
_DATE_DIGITS = {"yyyy": r"\d{4}"}


def _date_pattern(layout: str) -> str:
    """Return the regular expression of a date layout such as ``yyyy/MM/dd``."""
    out, at = [], 0
    for part in _DATE_PARTS.finditer(layout):
        out.append(re.escape(layout[at : part.start()]))
        out.append(_DATE_DIGITS.get(part.group(), r"\d{2}"))
        at = part.end()
    return "".join(out) + re.escape(layout[at:])


def _compile(text: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    out, keys, at = [], [], 0
    for token in _TOKEN.finditer(text):
        out.append(re.escape(text[at : token.start()]))
        at = token.end()
        if token.group() == "**":
            out.append(".*")
        elif token.group() == "*":
            out.append("[^/]*")
        elif token.group() == "?":
            out.append("[^/]")
        else:
            name, layout = token.group(1), token.group(2)
            if not name.isidentifier() or name in keys:
                raise ConfigError(
                    f"partition_format={text!r}: {{{name}}} is not a key name (a Python identifier, used "
                    "once), e.g. partition_format='{Store}/{Brand}/*.csv'"
                )
            keys.append(name)
            body = _date_pattern(layout) if layout else "[^/]+"
            out.append(f"(?P<{name}>{body})")
    out.append(re.escape(text[at:]))
    if not keys:
        raise ConfigError(
            f"partition_format={text!r} names no key; write each key in braces, e.g. "
            "partition_format='{Store}/{Brand}/*.csv'"
        )
    return re.compile(f"(?:^|/){''.join(out)}$"), tuple(keys)


@dataclass(frozen=True)
class PartitionFormat:
    """A compiled ``partition_format``: which keys a path holds, and their values in a path."""

    text: str
    keys: tuple[str, ...] = field(init=False)
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip("/"):
            raise ConfigError(
                f"partition_format={self.text!r} must be a path format relative to the dataset's path, "
                "e.g. partition_format='{Store}/{Brand}/*.csv'"
            )
        pattern, keys = _compile(self.text.lstrip("/"))
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "keys", keys)

    def values_of(self, path: str) -> dict[str, str] | None:
        """Return the keys' values in ``path`` (relative to the dataset's folder), or None if it differs."""
        found = self._pattern.search(path.replace("\\", "/").lstrip("/"))
        return None if found is None else {key: found.group(key) for key in self.keys}
