"""Make one mini-batch per key group (Azure's ``partition_keys``): files by path keys, rows by columns.

Files: each file's keys come from its path through the dataset's ``partition_format``; a key
group's files, in listing order, make its mini-batch. Tables (and a SQL input's snapshot): the
partition task reads only the key columns, piece by piece (a parquet row group, or about
``SCAN_BYTES`` of a text file), and notes which pieces hold each group and how many rows; it
never holds more than one piece. The group's worker then reads those pieces and keeps the
group's rows (see ``group_reading.py``), so a group arrives whole and alone in one DataFrame
whatever files it spans, and its row count is known from the start. Groups come in the order
they first appear in the input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_parallelrun.core.errors import ConfigError, StorageError
from airflow_parallelrun.core.inputs.formats import table_format
from airflow_parallelrun.core.inputs.minibatch import MiniBatch, TabularPiece
from airflow_parallelrun.core.inputs.partition_format import PartitionFormat
from airflow_parallelrun.core.inputs.reading import is_local, read_table_rows
from airflow_parallelrun.core.sizes import MiniBatchSize
from airflow_parallelrun.core.storage.concurrent import READS_IN_FLIGHT, map_ahead
from airflow_parallelrun.core.storage.location import call_with_retries, open_url

log = logging.getLogger(__name__)

#: How much of a text table the partition task reads at once to find its key groups.
SCAN_BYTES = 4 * 1024 * 1024

GroupKey = tuple[Any, ...]


def plain(value: Any) -> Any:
    """Return a key's value as JSON holds it: a missing value (NaN, None, NA) is None.

    >>> import numpy as np
    >>> plain(np.int64(3)), plain(float("nan")), plain("A"), plain(np.float64(2.5))
    (3, None, 'A', 2.5)
    """
    try:
        if value is None or (not isinstance(value, str) and math.isnan(value)):
            return None
    except (TypeError, ValueError):
        if str(value) in ("<NA>", "NaT"):
            return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def group_files(
    files: list[tuple[str, int | None]], root: str | None, partition_format: str, keys: Sequence[str]
) -> tuple[list[MiniBatch], list[dict[str, str]]]:
    """Return one mini-batch per key group of ``files``, and the files whose path does not match the format.

    >>> batches, refused = group_files(
    ...     [("/in/s1/a/x.csv", 1), ("/in/s2/a/y.csv", 1), ("/in/s1/a/z.csv", 1), ("/in/w.csv", 1)],
    ...     "/in", "{Store}/{Brand}/*.csv", ["Store"])
    >>> [(mb.partition_key_value, mb.files) for mb in batches]
    [({'Store': 's1'}, ('/in/s1/a/x.csv', '/in/s1/a/z.csv')), ({'Store': 's2'}, ('/in/s2/a/y.csv',))]
    >>> refused[0]["input"]
    '/in/w.csv'
    """
    fmt = PartitionFormat(partition_format)
    prefix = _bare(root).rstrip("/") + "/" if root else ""
    groups: dict[GroupKey, list[tuple[str, int | None]]] = {}
    refused = []
    for url, size in files:
        bare = _bare(url)
        values = fmt.values_of(bare[len(prefix) :] if prefix and bare.startswith(prefix) else bare)
        if values is None:
            refused.append({"input": url, "reason": f"its path does not match partition_format {fmt.text!r}"})
            continue
        groups.setdefault(tuple(values[key] for key in keys), []).append((url, size))
    batches = [
        MiniBatch.of_files(index, listed, dict(zip(keys, key, strict=True)))
        for index, (key, listed) in enumerate(groups.items())
    ]
    return batches, refused


def _bare(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def group_table(files: list[tuple[str, int | None]], fmt: str, keys: Sequence[str]) -> list[MiniBatch]:
    """Return one mini-batch per key group of a table's rows, each with its pieces and its row count.

    A piece whose key columns cannot be read becomes a mini-batch of its own, without keys, whose
    reading fails and is counted there (as an unreadable file does without keys).
    """
    from airflow_parallelrun.core.inputs.splitting import partition_table

    scan_size = MiniBatchSize("bytes", SCAN_BYTES if table_format(fmt).lines else 1)
    pieces = [mb.piece for mb in partition_table(files, fmt, scan_size) if mb.piece is not None]
    remote = any(not is_local(url) for url, _ in files)
    rows: dict[GroupKey, int] = {}
    holders: dict[GroupKey, list[int]] = {}
    rejected: dict[int, int] = {}
    unreadable: list[TabularPiece] = []
    scanned = map_ahead(lambda piece: _scan(piece, keys), pieces, READS_IN_FLIGHT if remote else 0)
    for number, (piece, (counts, rejects)) in enumerate(zip(pieces, scanned, strict=True)):
        if counts is None:
            unreadable.append(piece)
            continue
        rejected[number] = rejects
        for key, count in counts.items():
            rows[key] = rows.get(key, 0) + count
            holders.setdefault(key, []).append(number)
    return _group_batches(keys, pieces, rows, holders, rejected) + _alone(unreadable, len(rows))


def _group_batches(
    keys: Sequence[str],
    pieces: list[TabularPiece],
    rows: Mapping[GroupKey, int],
    holders: Mapping[GroupKey, list[int]],
    rejected: Mapping[int, int],
) -> list[MiniBatch]:
    """Build the groups' mini-batches; a piece's rejected rows go to the first group that reads it."""
    claimed: set[int] = set()
    batches = []
    for index, (key, count) in enumerate(rows.items()):
        numbers = holders[key]
        claims = tuple(i for i, n in enumerate(numbers) if rejected.get(n) and n not in claimed)
        claimed.update(numbers[i] for i in claims)
        batches.append(
            MiniBatch(
                index=index,
                kind="tabular",
                pieces=tuple(pieces[n] for n in numbers),
                items=count + sum(rejected[numbers[i]] for i in claims),
                partition_key_value=dict(zip(keys, key, strict=True)),
                rejected_from=claims,
            )
        )
    return batches


def _alone(unreadable: list[TabularPiece], first: int) -> list[MiniBatch]:
    return [
        MiniBatch(index=first + i, kind="tabular", piece=piece, partition_key_value={})
        for i, piece in enumerate(unreadable)
    ]


def _scan(piece: TabularPiece, keys: Sequence[str]) -> tuple[dict[GroupKey, int] | None, int]:
    """Return the rows of each key group in one piece (None if it cannot be read) and its rejected rows.

    Raise ``ConfigError`` when the table has no such column: a misspelt key, not a bad piece.
    """
    try:
        frame, rejects = _key_columns(piece, keys)
    except (StorageError, ConfigError):
        raise
    except Exception as exc:
        log.warning(
            "cannot read the key columns of %s (%s: %s); it becomes a mini-batch of its own, where reading "
            "it fails and is counted",
            piece.describe(),
            type(exc).__name__,
            exc,
        )
        return None, 0
    counts: dict[GroupKey, int] = {}
    for key, count in frame.groupby(list(keys), dropna=False, sort=False).size().items():
        values = tuple(plain(v) for v in (key if isinstance(key, tuple) else (key,)))
        counts[values] = counts.get(values, 0) + int(count)
    return counts, rejects


def _key_columns(piece: TabularPiece, keys: Sequence[str]) -> tuple[Any, int]:
    """Read only what the key columns need of a piece: a parquet file's columns, a text piece's rows."""
    if table_format(piece.format).lines:
        rows = read_table_rows(piece)
        frame, rejects = rows.frame, rows.rejected
        columns = list(frame.columns)
    else:
        import pyarrow.parquet as pq

        def read() -> Any:
            with open_url(piece.path) as f:
                source = pq.ParquetFile(f)
                names = source.schema_arrow.names
                wanted = [k for k in keys if k in names]
                groups = list(range(piece.start, piece.end)) if piece.unit == "row_groups" else None
                table = source.read_row_groups(groups, columns=wanted) if groups else source.read(wanted)
                return table.to_pandas(), names

        frame, columns = call_with_retries(read)
        rejects = 0
    if missing := [key for key in keys if key not in columns]:
        raise ConfigError(
            f"partition_keys {missing!r} are not columns of {piece.path} (its columns: "
            f"{list(columns)[:50]!r}); name columns the table has"
        )
    return frame[list(keys)], rejects
