"""Name what each table format is, in one registry that listing, splitting and reading consult.

A format is either lines of text (split into byte ranges cut at line ends, read and counted
line by line) or parquet (split by row groups or rows, read and counted from its footer). A
text format says whether its first line is a header and how its fields are separated (none:
each line is a JSON object). To add a delimited text format, add one entry to ``FORMATS``.

>>> [name for name, fmt in FORMATS.items() if fmt.header]
['csv', 'tsv']
>>> table_format("tsv").separator
'\\t'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TableFormat:
    """One table format: how its files are laid out, which tells how to split, read and count them."""

    name: str
    layout: Literal["lines", "parquet"]
    header: bool = False
    separator: str | None = None

    @property
    def lines(self) -> bool:
        """Tell whether the format is text, one row per line."""
        return self.layout == "lines"


FORMATS: dict[str, TableFormat] = {
    "csv": TableFormat("csv", "lines", header=True, separator=","),
    "tsv": TableFormat("tsv", "lines", header=True, separator="\t"),
    "parquet": TableFormat("parquet", "parquet"),
    "jsonl": TableFormat("jsonl", "lines"),
}


def table_format(name: str) -> TableFormat:
    """Return the format called ``name``; raise ``ValueError`` naming the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown table format {name!r}; the known formats are {', '.join(FORMATS)}"
        ) from None
