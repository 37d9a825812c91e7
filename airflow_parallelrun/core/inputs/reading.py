"""Read one mini-batch: make its files local, or load its piece of a table as a DataFrame.

A bad input fails only what it must. A file that cannot be opened, a table piece that is empty,
binary, not UTF-8 or not parseable fails its mini-batch with a message naming the file and the
cause. A csv or tsv row whose field count differs from the header's is rejected on its own: the
other rows of its piece are read, and the rejected rows are reported by line number.
"""

from __future__ import annotations

import csv
import logging
import os
import posixpath
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fsspec.implementations.local import LocalFileSystem

from airflow_parallelrun.core.errors import InputError, InputReadError, StorageError, TableReadError
from airflow_parallelrun.core.inputs.byte_ranges import (
    TableRows,
    count_lines,
    parse_text_rows,
    read_line_range,
)
from airflow_parallelrun.core.inputs.formats import table_format
from airflow_parallelrun.core.inputs.minibatch import MiniBatch, TabularPiece
from airflow_parallelrun.core.storage.location import call_with_retries, open_url, url_to_fs

if TYPE_CHECKING:
    import pandas as pd

_MESSAGE_LINES = 20
_BLOCK = 8 * 1024 * 1024

log = logging.getLogger(__name__)


def _input_at_fault(exc: BaseException) -> bool:
    """Tell whether reading a file raised ``exc`` because the file is not (or no longer) readable.

    An OS error, a bad value and anything pyarrow raises on a corrupt file are the input's; a
    ``StorageError`` (transient errors that persisted) and the engine's own bugs are not.
    """
    if isinstance(exc, StorageError):
        return False
    return isinstance(exc, (OSError, ValueError, EOFError)) or type(exc).__module__.startswith("pyarrow")


def is_local(url: str) -> bool:
    fs, _ = url_to_fs(url)
    return isinstance(fs, LocalFileSystem)


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


def read_table_piece(piece: TabularPiece) -> pd.DataFrame:
    """Read one piece of a table as a DataFrame, reading only its own bytes.

    Raise ``TableReadError`` naming the file and the cause if the piece cannot be read, and
    also if a row was rejected (see :func:`read_table_rows` to read the other rows).
    """
    rows = read_table_rows(piece)
    if rows.rejected:
        raise TableReadError(f"{piece.path}: {rows.message}", rows.rejected + len(rows.frame))
    return rows.frame


def read_table_rows(piece: TabularPiece) -> TableRows:
    """Read one piece of a table, reading only its own bytes; reject ragged csv/tsv rows.

    Raise ``TableReadError`` naming the file and the cause if the piece cannot be read at all:
    the file is gone, may not be read, is not a table of its format, or is empty (a csv or tsv
    needs its header line; an empty jsonl file is an empty table).
    """
    name = piece.path
    try:
        if not table_format(piece.format).lines:
            return TableRows(call_with_retries(_read_parquet, piece).to_pandas())
        head, body, offset = call_with_retries(_read_text, piece)
    except FileNotFoundError as exc:
        raise TableReadError(
            f"{name}: the file is gone ({exc}); it was listed but cannot be read", None
        ) from exc
    except PermissionError as exc:
        raise TableReadError(f"{name}: permission denied ({exc}); let the worker read it", None) from exc
    except Exception as exc:
        if not _input_at_fault(exc):
            # A StorageError (the retries gave up) or a bug of ours is not the input's fault: it
            # goes up as it is, traceback and all.
            raise
        raise TableReadError(
            f"{name}: cannot read {piece.describe()}: {type(exc).__name__}: {exc}", None
        ) from exc
    try:
        # Count the lines before the piece only to name rejected rows exactly: rarely, that is.
        rows = parse_text_rows(
            head,
            body,
            piece.format,
            offset=offset,
            first_line=lambda: call_with_retries(_lines_before, piece.path, offset) + 1,
        )
    except Exception as exc:
        # The parse reads only the piece's bytes, so what pandas, json and csv raise on them is the
        # input's fault: ValueErrors mostly, a TypeError for json lines that mix objects and arrays.
        # Any other kind is logged with its traceback, in case it is the engine's.
        if not isinstance(exc, (InputError, ValueError, TypeError, csv.Error)):
            log.warning("unexpected %s parsing %s", type(exc).__name__, piece.describe(), exc_info=True)
        cause = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        raise TableReadError(
            f"{name}: cannot read {piece.describe()} as {piece.format}: {cause}", count_lines(body)
        ) from exc
    if rows.rejected:
        rows.message = f"{name}: {rows.message}"
    return rows


def _read_parquet(piece: TabularPiece) -> Any:
    with open_url(piece.path) as f:
        return read_parquet_piece(f, piece)


def _read_text(piece: TabularPiece) -> tuple[bytes, bytes, int]:
    """Return the header line, the piece's lines, and the file offset of the first of them."""
    with open_url(piece.path) as f:
        if piece.unit == "file":
            start, end = 0, f.seek(0, os.SEEK_END)
        else:
            start, end = piece.start, piece.end
        head, body = read_line_range(f, start, end, header=table_format(piece.format).header)
        return head, body, f.tell() - len(body)


def _lines_before(url: str, offset: int) -> int:
    """Count the line breaks in the first ``offset`` bytes of a file."""
    count, done = 0, 0
    with open_url(url) as f:
        while done < offset and (block := f.read(min(_BLOCK, offset - done))):
            count += block.count(b"\n")
            done += len(block)
    return count


def check_files_readable(files: Sequence[str]) -> None:
    """Raise ``InputReadError`` naming every local file of a mini-batch that cannot be opened.

    Opening reads nothing (and does not wait on a named pipe); it finds the files deleted since
    listing, and those that may not be read, before ``run()`` spends its tries on them.
    """
    problems = []
    for path in files:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        except FileNotFoundError as exc:
            problems.append(f"{path}: the file is gone ({exc}); it was listed but cannot be read")
        except PermissionError as exc:
            problems.append(f"{path}: permission denied ({exc}); let the worker read it")
        except OSError as exc:
            problems.append(f"{path}: cannot open it: {type(exc).__name__}: {exc}")
    if problems:
        listed = "; ".join(problems[:_MESSAGE_LINES])
        more = f"; and {len(problems) - _MESSAGE_LINES} more" if len(problems) > _MESSAGE_LINES else ""
        raise InputReadError(
            f"{len(problems)} of the {len(files)} files cannot be read: {listed}{more}", len(files)
        )


def count_piece_items(mb: MiniBatch) -> int | None:
    """Count the items of a mini-batch that never ran: its files, or the rows its piece holds.

    Reads only the piece's own bytes (or a parquet footer). Return None when the piece cannot
    be read (the file is gone or unreadable, the parquet footer is lost): how many items it
    holds is then unknown, and is said so rather than guessed.
    """
    if mb.items is not None:
        return mb.items
    if mb.piece is None:
        return len(mb.files)
    piece = mb.piece

    def count() -> int:
        if table_format(piece.format).lines:
            return count_lines(_read_text(piece)[1])
        import pyarrow.parquet as pq

        with open_url(piece.path) as f:
            meta = pq.ParquetFile(f).metadata
        if piece.unit == "row_groups":
            return sum(meta.row_group(i).num_rows for i in range(piece.start, piece.end))
        return int(meta.num_rows)

    try:
        return call_with_retries(count)
    except Exception as exc:
        if not (_input_at_fault(exc) or isinstance(exc, StorageError)):
            log.exception(
                "cannot count the items of %s (%s): an error of the engine", mb.id, piece.describe()
            )
            return None
        log.warning(
            "cannot count the items of %s (%s): %s: %s", mb.id, piece.describe(), type(exc).__name__, exc
        )
    return None


class FetchCancelled(Exception):
    """A fetch was stopped before it finished: its mini-batch will not run here."""


def stage_mini_batch(mb: MiniBatch, scratch: str, *, stop: threading.Event | None = None) -> MiniBatch:
    """Return ``mb`` with every remote input copied into ``scratch``; local inputs stay where they are.

    The worker process then reads only local files, whatever filesystem the input is on; a
    remote file keeps its own name (see :func:`staged_names`). A local file that cannot be
    opened any more raises ``InputReadError`` naming it, before ``run()`` spends its tries on
    it. ``stop``, once set, ends the copy between two files with ``FetchCancelled``.
    """

    def check_stop() -> None:
        if stop is not None and stop.is_set():
            raise FetchCancelled(f"the fetch of {mb.id} was cancelled")

    check_stop()
    if mb.piece is not None:
        return mb if is_local(mb.piece.path) else replace(mb, piece=stage_piece(mb.piece, scratch, mb.id))
    if mb.pieces:
        from airflow_parallelrun.core.inputs.group_reading import stage_key_group

        return stage_key_group(mb, scratch)
    return _stage_files(mb, scratch, check_stop)


def stage_piece(piece: TabularPiece, scratch: str, name: str) -> TabularPiece:
    """Copy a remote table piece into ``scratch``: parquet as parquet, a text piece with its header.

    Return the local copy, a whole-file piece; ``name`` is its file name if the piece has none.
    """
    # Named as the piece is named (``t.csv[bytes=0:65536]``), so that a message naming the
    # copy names the input, and says that its line numbers count from the piece's header.
    named = MiniBatch(index=0, kind="tabular", piece=piece).inputs[0]
    local = os.path.join(scratch, posixpath.basename(named.rstrip("/")) or name)
    if not table_format(piece.format).lines:
        import pyarrow.parquet as pq

        def fetch() -> None:
            with open_url(piece.path) as f:
                source = pq.ParquetFile(f)
                groups = source.metadata.num_row_groups
                if not (
                    piece.unit == "file"
                    or (piece.unit == "row_groups" and piece.start == 0 and piece.end >= groups)
                ):
                    pq.write_table(read_parquet_piece(f, piece), local)
                    return
            # The piece is the whole file: its bytes as they are, without decoding and
            # encoding them again in the task's process (CPU the workers need).
            fs, path = url_to_fs(piece.path)
            fs.get_file(path, local)

        call_with_retries(fetch)
    else:

        def fetch_text() -> None:
            head, body, _ = _read_text(piece)
            with open(local, "wb") as out:
                out.write(head + body)

        call_with_retries(fetch_text)
    return replace(piece, path=local, unit="file", start=0, end=0)


def _stage_files(mb: MiniBatch, scratch: str, check_stop: Callable[[], None]) -> MiniBatch:
    """Copy a mini-batch's remote files into ``scratch/<mb.id>`` under their own names."""
    check_files_readable([url_to_fs(url)[1] for url in mb.files if is_local(url)])
    remote = [url for url in mb.files if not is_local(url)]
    names = dict(zip(remote, staged_names(remote), strict=True))
    local_files = []
    folder = os.path.join(scratch, mb.id)
    for url in mb.files:
        if url not in names:
            local_files.append(url_to_fs(url)[1])
            continue
        check_stop()
        target = os.path.join(folder, *names[url].split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs, path = url_to_fs(url)
        try:
            call_with_retries(fs.get_file, path, target)
        except FileNotFoundError as exc:
            raise InputReadError(
                f"{url}: the file is gone ({exc}); it was listed but cannot be read", len(mb.files)
            ) from exc
        except PermissionError as exc:
            raise InputReadError(
                f"{url}: permission denied ({exc}); let the worker read it", len(mb.files)
            ) from exc
        local_files.append(target)
    return replace(mb, files=tuple(local_files))


def staged_names(urls: Sequence[str]) -> list[str]:
    """Return where each remote input of a mini-batch is staged, relative to the mini-batch's folder.

    Each file keeps its own name, so an entry script that names its outputs after its inputs
    writes the names it would write for local files. Files of one folder stay side by side;
    files of several folders keep the sub-folders below the deepest folder they share, so equal
    names from different folders never overwrite each other (Azure's mounted inputs differ by
    their folders the same way).

    >>> staged_names(["s3://b/in/img_0001.png", "s3://b/in/img_0002.png"])
    ['img_0001.png', 'img_0002.png']
    >>> staged_names(["s3://b/in/a/x.png", "s3://b/in/b/x.png", "s3://b/in/b/c/y.png"])
    ['a/x.png', 'b/x.png', 'b/c/y.png']
    >>> staged_names(["s3://b/in/x.png", "abfs://b/in/x.png"])
    ['s3/b/in/x.png', 'abfs/b/in/x.png']
    >>> staged_names([])
    []
    """
    # The scheme is a folder of its own, so equal paths on two stores stay apart too.
    keys = [_safe_parts(url.replace("://", "/", 1)) for url in urls]
    if not keys:
        return []
    shared = 0
    folders = [k[:-1] for k in keys]
    while all(len(f) > shared and f[shared] == folders[0][shared] for f in folders):
        shared += 1
    return ["/".join(k[shared:]) for k in keys]


def _safe_parts(path: str) -> list[str]:
    """Split a path into the parts a local path may hold: no empty, ``.`` or ``..`` part."""
    return [{"..": "%2E%2E"}.get(p, p) for p in path.split("/") if p not in ("", ".")]
