"""Split a listed input into mini-batches: files by count, tables into pieces by bytes or rows."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from airflow_parallelrun.core.errors import StorageError
from airflow_parallelrun.core.inputs.datasets import Dataset, FileDataset, TabularDataset
from airflow_parallelrun.core.inputs.formats import table_format
from airflow_parallelrun.core.inputs.listing import list_input_files, with_retries
from airflow_parallelrun.core.inputs.minibatch import MiniBatch, TabularPiece
from airflow_parallelrun.core.inputs.parquet_footers import footer_tails, metadata_of
from airflow_parallelrun.core.inputs.reading import is_local
from airflow_parallelrun.core.sizes import MiniBatchSize
from airflow_parallelrun.core.storage.concurrent import READS_IN_FLIGHT, map_ahead
from airflow_parallelrun.core.storage.location import open_url, url_to_fs

log = logging.getLogger(__name__)

NO_FILES_NOTE = "the input matched no files: the run has zero mini-batches and succeeds with zero items"
_SCAN_BLOCK = 8 * 1024 * 1024
_PIECE = re.compile(r"^(.+)\[(bytes|rows|row_groups)=(\d+):(\d+)\]$")


def end_minus_start(piece: TabularPiece) -> int | None:
    """Return the rows a piece holds when its range counts rows, else None (unknown until read)."""
    return piece.end - piece.start if piece.unit == "rows" else None


def partition_files(files: list[tuple[str, int | None]], size: MiniBatchSize) -> list[MiniBatch]:
    """Group files into mini-batches of ``size.value`` files, in listing order.

    >>> [mb.files for mb in partition_files([("a", 1), ("b", 1), ("c", 1)], MiniBatchSize("files", 2))]
    [('a', 'b'), ('c',)]
    >>> partition_files([], MiniBatchSize("files", 10))
    []
    """
    count = size.value
    if size.unit != "files" or count < 1:
        raise ValueError(f"a FileDataset needs a positive count of files per mini-batch, got {size}")
    return [
        MiniBatch.of_files(index, files[start : start + count])
        for index, start in enumerate(range(0, len(files), count))
    ]


def _text_byte_ranges(file_size: int, size: int) -> list[tuple[int, int]]:
    """Cut ``[0, file_size)`` into ranges of ``size`` bytes; an empty file still gets one range.

    >>> _text_byte_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    >>> _text_byte_ranges(0, 4)
    [(0, 0)]
    """
    if file_size <= 0:
        return [(0, 0)]
    return [(start, min(start + size, file_size)) for start in range(0, file_size, size)]


def _text_row_ranges(url: str, fmt: str, rows: int) -> tuple[list[tuple[int, int, int]], int]:
    """Scan a text table once and cut it every ``rows`` data lines: ``[(start, end, n)]``."""
    ranges: list[tuple[int, int, int]] = []
    with open_url(url) as f:
        offset = 0
        if table_format(fmt).header:
            offset = len(f.readline())
        start, in_range, tail_open = offset, 0, False
        while block := f.read(_SCAN_BLOCK):
            pos = 0
            while (nl := block.find(b"\n", pos)) != -1:
                in_range += 1
                pos = nl + 1
                if in_range == rows:
                    end = offset + pos
                    ranges.append((start, end, in_range))
                    start, in_range = end, 0
            tail_open = pos < len(block)
            offset += len(block)
        if tail_open:
            in_range += 1  # a last line without a line break
        if in_range or not ranges:
            ranges.append((start, offset, in_range))
    return ranges, offset


def _parquet_pieces(
    url: str, size: MiniBatchSize, tail: bytes | None = None
) -> list[tuple[TabularPiece, int]]:
    """Cut a parquet file into pieces by its footer: in ``tail`` (its last bytes) if read already."""
    import pyarrow.parquet as pq

    meta = metadata_of(tail) if tail is not None else None
    if meta is None:
        with open_url(url) as f:
            meta = pq.ParquetFile(f).metadata
    groups = [
        (meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)
    ]
    pieces: list[tuple[TabularPiece, int]] = []
    if size.unit == "rows":
        total = sum(n for n, _ in groups)
        for start in range(0, total, size.value):
            end = min(start + size.value, total)
            pieces.append((TabularPiece(url, "parquet", "rows", start, end), end - start))
    else:
        first, rows, nbytes = 0, 0, 0
        for i, (n, b) in enumerate(groups):
            if i > first and nbytes + b > size.value:
                pieces.append((TabularPiece(url, "parquet", "row_groups", first, i), rows))
                first, rows, nbytes = i, 0, 0
            rows += n
            nbytes += b
        if groups:
            pieces.append((TabularPiece(url, "parquet", "row_groups", first, len(groups)), rows))
    return pieces or [(TabularPiece(url, "parquet", "rows", 0, 0), 0)]


def partition_table(files: list[tuple[str, int | None]], fmt: str, size: MiniBatchSize) -> list[MiniBatch]:
    """Split each table file into pieces of about ``size``; a piece never crosses a file boundary.

    A file whose layout cannot be read (a truncated parquet footer, a file gone since listing)
    becomes one whole-file mini-batch, so that reading it fails and is counted there. A storage
    error that persists through the retries raises ``StorageError`` instead: that is no fault
    of the file's.
    """
    if size.unit not in ("bytes", "rows") or size.value < 1:
        raise ValueError(f"a TabularDataset needs a positive byte or row size per mini-batch, got {size}")
    # On a remote store the files' layouts (parquet footers) are read several at once, in order:
    # the footers' bytes in batches first, where the filesystem can (one round trip a batch).
    remote = any(not is_local(url) for url, _ in files)
    tails = footer_tails(files) if remote and fmt == "parquet" else repeat(None)
    pieces = [
        piece
        for pieces_of_file in map_ahead(
            lambda listed: _pieces_or_whole(*listed[0], fmt, size, listed[1]),
            zip(files, tails, strict=False),  # tails: one a file, or None forever
            READS_IN_FLIGHT if remote else 0,
        )
        for piece in pieces_of_file
    ]
    return [
        MiniBatch(index=i, kind="tabular", piece=piece, items=items)
        for i, (piece, items) in enumerate(pieces)
    ]


def _pieces_or_whole(
    url: str, file_size: int | None, fmt: str, size: MiniBatchSize, tail: bytes | None = None
) -> list[tuple[TabularPiece, int | None]]:
    """Cut one listed table file (or a piece named by a report) into pieces, or keep it whole."""
    named = _PIECE.match(url)
    if named is not None:
        # A piece named as the report and the dead letters name it: re-run exactly that piece.
        path, unit, start, end = named.groups()
        piece = TabularPiece(path, fmt, unit, int(start), int(end))  # type: ignore[arg-type]
        return [(piece, end_minus_start(piece))]
    try:
        return _pieces_of(url, file_size, fmt, size, tail)
    except StorageError:
        raise
    except Exception as exc:
        log.warning(
            "cannot read the layout of %s (%s: %s); it becomes one whole-file mini-batch, where "
            "reading it fails and is counted",
            url,
            type(exc).__name__,
            exc,
        )
        return [(TabularPiece(url, fmt, "file"), None)]


def _pieces_of(
    url: str, file_size: int | None, fmt: str, size: MiniBatchSize, tail: bytes | None = None
) -> list[tuple[TabularPiece, int | None]]:
    """Cut one table file into pieces of about ``size``, each with its row count when known."""
    if not table_format(fmt).lines:
        return list(with_retries(url, _parquet_pieces, url, size, tail))
    if size.unit == "rows":
        ranges, _ = with_retries(url, _text_row_ranges, url, fmt, size.value)
        return [(TabularPiece(url, fmt, "bytes", s, e), n) for s, e, n in ranges]
    if file_size is None:
        fs, path = url_to_fs(url)
        file_size = int(with_retries(url, fs.size, path))
    return [
        (TabularPiece(url, fmt, "bytes", s, e), None) for s, e in _text_byte_ranges(file_size, size.value)
    ]


def partition_dataset(
    dataset: Dataset, size: MiniBatchSize, partition_keys: Sequence[str] | None = None
) -> tuple[list[MiniBatch], dict[str, Any]]:
    """List the input and split it; return the mini-batches and facts for the manifest header.

    With ``partition_keys``, one mini-batch per key group instead (see ``key_groups.py``).
    """
    from airflow_parallelrun.core.inputs import key_groups

    files, refused, fingerprint, duplicates = list_input_files(dataset)
    if isinstance(dataset, TabularDataset):
        if partition_keys:
            batches = key_groups.group_table(files, dataset.format, partition_keys)
        else:
            batches = partition_table(files, dataset.format, size)
    else:
        assert isinstance(dataset, FileDataset)
        if partition_keys:
            assert dataset.partition_format is not None  # key_groups.check_partition_keys_fit
            batches, unmatched = key_groups.group_files(
                files, dataset.path, dataset.partition_format, partition_keys
            )
            refused = [*refused, *unmatched]
        else:
            batches = partition_files(files, size)
    if not files:
        log.warning("input %s: %s", dataset.path if dataset.path is not None else "files=[]", NO_FILES_NOTE)
    header = {
        "kind": "tabular" if dataset.tabular else "files",
        "format": getattr(dataset, "format", None),
        "input": dataset.path if dataset.path is not None else f"{len(files)} listed files",
        "input_files": len(files),
        "refused_inputs": refused,
        "duplicate_inputs_dropped": duplicates,
        "fingerprint": fingerprint,
        "mini_batch_size": {"unit": size.unit, "value": size.value},
        "partition_format": getattr(dataset, "partition_format", None),
        "note": "" if files else NO_FILES_NOTE,
    }
    return batches, header
