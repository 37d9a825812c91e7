"""Read one mini-batch: make its files local, or load its piece of a table as a DataFrame."""

from __future__ import annotations

import io
import os
import posixpath
from dataclasses import replace
from typing import TYPE_CHECKING, Any, BinaryIO

from fsspec.implementations.local import LocalFileSystem

from airflow_parallelrun.core.errors import InputError
from airflow_parallelrun.core.minibatch import MiniBatch, TabularPiece
from airflow_parallelrun.core.storage import call_with_retries, open_url, url_to_fs

if TYPE_CHECKING:
    import pandas as pd


def is_local(url: str) -> bool:
    fs, _ = url_to_fs(url)
    return isinstance(fs, LocalFileSystem)


def read_line_range(f: BinaryIO, start: int, end: int, *, header: bool) -> tuple[bytes, bytes]:
    """Return ``(header line, data lines)`` of the lines whose first byte is in ``[start, end)``.

    The header line belongs to no range. Only the range's own bytes are read, plus the rest of
    the last line that starts inside it.

    >>> data = io.BytesIO(b"h\\n1\\n22\\n333\\n")
    >>> read_line_range(data, 0, 4, header=True)
    (b'h\\n', b'1\\n')
    >>> read_line_range(data, 4, 6, header=True)
    (b'h\\n', b'22\\n')
    >>> read_line_range(data, 6, 12, header=True)
    (b'h\\n', b'333\\n')
    """
    f.seek(0)
    head = f.readline() if header else b""
    begin = max(start, len(head))
    if begin >= end:
        return head, b""
    if begin > len(head):
        f.seek(begin - 1)
        if f.read(1) != b"\n":
            f.readline()  # the line under way belongs to the range before
    else:
        f.seek(begin)
    pos = f.tell()
    if pos >= end:
        return head, b""
    body = f.read(end - pos)
    if body and not body.endswith(b"\n"):
        body += f.readline()
    return head, body


def parse_text_table(head: bytes, body: bytes, fmt: str) -> pd.DataFrame:
    """Parse csv/tsv (with ``head`` as the header line) or jsonl bytes into a DataFrame."""
    import pandas as pd

    if fmt == "jsonl":
        if not body.strip():
            return pd.DataFrame()
        return pd.read_json(io.BytesIO(body), lines=True)
    if not head.strip():
        raise InputError("the file is empty: a csv or tsv file needs a header line")
    return pd.read_csv(io.BytesIO(head + body), sep="\t" if fmt == "tsv" else ",")


def count_lines(body: bytes) -> int:
    """Count the lines in ``body``, a last line without a line break included.

    >>> count_lines(b"a\\nb"), count_lines(b"a\\n"), count_lines(b"")
    (2, 1, 0)
    """
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def read_parquet_piece(source: Any, piece: TabularPiece) -> Any:
    """Return the piece of a parquet file as a pyarrow Table."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(source)
    if piece.unit == "row_groups":
        return pf.read_row_groups(list(range(piece.start, piece.end)))
    if piece.unit == "file":
        return pf.read()
    # Rows: read only the row groups that overlap [start, end), then slice.
    meta, first_row, groups, offset = pf.metadata, None, [], 0
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        if offset + n > piece.start and offset < piece.end:
            groups.append(i)
            first_row = offset if first_row is None else first_row
        offset += n
    if not groups:
        return pf.schema_arrow.empty_table()
    table = pf.read_row_groups(groups)
    return table.slice(piece.start - (first_row or 0), piece.end - piece.start)


class TableReadError(InputError):
    """A piece of a table could not be parsed; ``items`` is how many rows it held, if known."""

    def __init__(self, message: str, items: int | None) -> None:
        super().__init__(message)
        self.items = items


def read_table_piece(piece: TabularPiece) -> pd.DataFrame:
    """Read one piece of a table as a DataFrame, reading only its own bytes."""
    name = piece.path
    try:
        with open_url(piece.path) as f:
            if piece.format == "parquet":
                return read_parquet_piece(f, piece).to_pandas()
            if piece.unit == "file":
                start, end = 0, f.seek(0, os.SEEK_END)
            else:
                start, end = piece.start, piece.end
            head, body = read_line_range(f, start, end, header=piece.format in ("csv", "tsv"))
    except FileNotFoundError as exc:
        raise TableReadError(
            f"{name}: the file is gone ({exc}); it was listed but cannot be read", None
        ) from exc
    except PermissionError as exc:
        raise TableReadError(f"{name}: permission denied ({exc}); let the worker read it", None) from exc
    except Exception as exc:
        raise TableReadError(
            f"{name}: cannot read {piece.describe()}: {type(exc).__name__}: {exc}", None
        ) from exc
    try:
        return parse_text_table(head, body, piece.format)
    except Exception as exc:
        raise TableReadError(
            f"{name}: cannot parse {piece.describe()} as {piece.format}: {type(exc).__name__}: {exc}",
            count_lines(body),
        ) from exc


def count_piece_items(mb: MiniBatch) -> int:
    """Count the items of a mini-batch that never ran: its files, or the rows its piece holds.

    Reads only the piece's own bytes (or a parquet footer). An unreadable piece counts as one
    item, so that its failure still counts against ``error_threshold``.
    """
    if mb.items is not None:
        return mb.items
    if mb.piece is None:
        return len(mb.files)
    piece = mb.piece
    try:
        with open_url(piece.path) as f:
            if piece.format == "parquet":
                import pyarrow.parquet as pq

                meta = pq.ParquetFile(f).metadata
                if piece.unit == "row_groups":
                    return sum(meta.row_group(i).num_rows for i in range(piece.start, piece.end))
                return int(meta.num_rows)
            end = f.seek(0, os.SEEK_END) if piece.unit == "file" else piece.end
            start = 0 if piece.unit == "file" else piece.start
            _, body = read_line_range(f, start, end, header=piece.format in ("csv", "tsv"))
            return count_lines(body)
    except Exception:
        return 1


def stage_mini_batch(mb: MiniBatch, scratch: str) -> MiniBatch:
    """Return ``mb`` with every remote input copied into ``scratch``; local inputs stay where they are.

    The worker process then reads only local files, whatever filesystem the input is on.
    """
    if mb.piece is not None:
        if is_local(mb.piece.path):
            return mb
        local = os.path.join(scratch, f"{mb.id}.{mb.piece.format}")
        piece = mb.piece
        if piece.format == "parquet":
            import pyarrow.parquet as pq

            def fetch() -> None:
                with open_url(piece.path) as f:
                    pq.write_table(read_parquet_piece(f, piece), local)

            call_with_retries(fetch)
            return replace(mb, piece=replace(piece, path=local, unit="file", start=0, end=0))

        def fetch_text() -> None:
            with open_url(piece.path) as f:
                end = f.seek(0, os.SEEK_END) if piece.unit == "file" else piece.end
                start = 0 if piece.unit == "file" else piece.start
                head, body = read_line_range(f, start, end, header=piece.format in ("csv", "tsv"))
            with open(local, "wb") as out:
                out.write(head + body)

        call_with_retries(fetch_text)
        return replace(mb, piece=replace(piece, path=local, unit="file", start=0, end=0))
    local_files = []
    folder = os.path.join(scratch, mb.id)
    for i, url in enumerate(mb.files):
        if is_local(url):
            local_files.append(url_to_fs(url)[1])
            continue
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, f"{i:05d}-{posixpath.basename(url.rstrip('/'))}")
        fs, path = url_to_fs(url)
        call_with_retries(fs.get_file, path, target)
        local_files.append(target)
    return replace(mb, files=tuple(local_files))
