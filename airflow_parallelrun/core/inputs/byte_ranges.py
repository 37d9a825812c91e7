"""Read the rows of a text table (csv, tsv, jsonl) from a byte range, rejecting ragged rows alone.

A line belongs to the range its first byte falls in; a csv or tsv header line belongs to none.
A piece that is binary, not UTF-8 or not parseable fails with a message naming the cause; a csv
or tsv row whose field count differs from the header's is rejected on its own, by line number,
and the other rows of its piece are kept.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_parallelrun.core.errors import InputError
from airflow_parallelrun.core.inputs.formats import table_format

if TYPE_CHECKING:
    import pandas as pd

# How many rejected line numbers a reply and a message carry; the count is always exact.
MAX_LISTED_LINES = 1000
_MESSAGE_LINES = 20


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
        # A line starts in the range only after a line break in [begin - 1, end - 1). Look for it
        # in the range's own bytes: never read on through a line longer than the range, or each
        # range inside one enormous row would read the rest of that row.
        f.seek(begin - 1)
        window = f.read(end - begin + 1)
        nl = window.find(b"\n", 0, end - begin)
        if nl == -1:
            return head, b""
        body = window[nl + 1 :]
    else:
        f.seek(begin)
        body = f.read(end - begin)
    if body and not body.endswith(b"\n"):
        body += f.readline()
    return head, body


def count_lines(body: bytes) -> int:
    """Count the lines in ``body``, a last line without a line break included.

    >>> count_lines(b"a\\nb"), count_lines(b"a\\n"), count_lines(b"")
    (2, 1, 0)
    """
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


@dataclass
class TableRows:
    """A piece of a table as read: the rows for ``run()``, and the rows rejected while reading.

    ``rejected`` counts the rejected rows; ``rejected_lines`` holds the line numbers of the first
    ``MAX_LISTED_LINES`` of them (line 1 is the file's first, a csv's header); ``message`` says
    what was wrong.
    """

    frame: pd.DataFrame
    rejected: int = 0
    rejected_lines: list[int] = field(default_factory=list)
    message: str = ""


def parse_text_rows(
    head: bytes, body: bytes, fmt: str, *, offset: int = 0, first_line: int | Callable[[], int] = 0
) -> TableRows:
    """Parse a piece of a text table; reject csv/tsv rows whose field count differs from the header's.

    ``offset`` is the file offset of ``body`` and ``first_line`` the line number of its first
    line (0 if unknown, or a function called only when a row is rejected); they only make
    messages exact. Raise ``InputError`` for a piece that is not a text table at all: empty
    (csv, tsv), binary, not UTF-8, or not parseable.

    >>> rows = parse_text_rows(b"a,b\\n", b"1,2\\n3,4,5\\n6\\n7,8\\n", "csv", first_line=2)
    >>> rows.frame.to_dict("list"), rows.rejected, rows.rejected_lines
    ({'a': [1, 7], 'b': [2, 8]}, 2, [3, 4])
    """
    import pandas as pd

    _check_text(head, 0, fmt)
    _check_text(body, offset, fmt)
    separator = table_format(fmt).separator
    if separator is None:
        if not body.strip():
            return TableRows(pd.DataFrame())
        return TableRows(_decoded(pd.read_json, io.BytesIO(body), head, body, offset, lines=True))
    if not head.strip():
        raise InputError("the file is empty: a csv or tsv file needs a header line")
    sep = separator
    # The fast path: pandas alone. It raises on a long row, but pads a short row with NaN and
    # (with index_col=False) drops the extra fields of a long first row with a warning: when
    # any of these could have happened, look at every row.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = _decoded(
                pd.read_csv, io.BytesIO(head + body), head, body, offset, sep=sep, index_col=False
            )
        except pd.errors.ParserError:
            frame = None
    warned = any(issubclass(w.category, pd.errors.ParserWarning) for w in caught)
    if frame is not None and not warned and (frame.empty or not frame.iloc[:, -1].isna().any()):
        return TableRows(frame)
    return _reject_ragged_rows(head, body, sep, offset, first_line)


def _check_text(data: bytes, offset: int, fmt: str) -> None:
    nul = data.find(b"\x00")
    if nul != -1:
        raise InputError(f"a NUL byte at byte {offset + nul}: binary data, not a {fmt} text table")


def _utf8(head: bytes, body: bytes, offset: int) -> tuple[str, str]:
    """Decode a piece as UTF-8, or say where its first bad byte is (``offset`` is the body's)."""
    for data, at in ((head, 0), (body, offset)):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"not UTF-8 text: byte {data[exc.start]:#04x} at byte {at + exc.start} ({exc.reason}); "
                "save the file as UTF-8"
            ) from None
    return head.decode("utf-8"), body.decode("utf-8")


def _decoded(parse: Any, source: Any, head: bytes, body: bytes, offset: int, **kwargs: Any) -> Any:
    """Call ``parse``; turn a decoding error into one that says where the first bad byte is."""
    try:
        return parse(source, **kwargs)
    except UnicodeDecodeError:
        _utf8(head, body, offset)
        raise


def _reject_ragged_rows(
    head: bytes, body: bytes, sep: str, offset: int, first_line: int | Callable[[], int]
) -> TableRows:
    """Drop the rows whose field count differs from the header's, and parse the rest."""
    import pandas as pd

    head_text, body_text = _utf8(head, body, offset)
    width = len(next(csv.reader([head_text], delimiter=sep), []))
    reader = csv.reader(io.StringIO(body_text), delimiter=sep)
    _allow_long_fields()
    bad: list[tuple[int, int, int]] = []  # each bad row: its first line, the line after it, its fields
    previous = 0
    try:
        for record in reader:
            blank = not record or (len(record) == 1 and not record[0].strip())
            if not blank and len(record) != width:
                bad.append((previous, reader.line_num, len(record)))
            previous = reader.line_num
    except csv.Error as exc:
        raise InputError(f"cannot parse line {previous + 1} of the piece: {exc}") from exc
    if not bad:
        return TableRows(pd.read_csv(io.BytesIO(head + body), sep=sep, index_col=False))
    if callable(first_line):
        first_line = first_line()
    dropped = {i for start, stop, _ in bad for i in range(start, stop)}
    kept = b"".join(line for i, line in enumerate(io.BytesIO(body).readlines()) if i not in dropped)
    frame = pd.read_csv(io.BytesIO(head + kept), sep=sep, index_col=False)
    listed = ", ".join(
        f"{_line_name(first_line, start)} ({fields} field{'' if fields == 1 else 's'})"
        for start, _, fields in bad[:_MESSAGE_LINES]
    )
    more = f" and {len(bad) - _MESSAGE_LINES} more" if len(bad) > _MESSAGE_LINES else ""
    what = f"{len(bad)} rows rejected, their field count differs from the header's {width}: {listed}{more}"
    if frame.empty:
        raise InputError(f"{what}; no row is left: check the header line and the separator")
    numbers = [first_line + start if first_line else start + 1 for start, _, _ in bad[:MAX_LISTED_LINES]]
    return TableRows(frame, len(bad), numbers, f"{what}; the other {len(frame)} rows were read")


def _line_name(first_line: int, index: int) -> str:
    """Name line ``index`` of a piece: by its line number in the file, when known."""
    return f"line {first_line + index}" if first_line else f"line {index + 1} of the piece"


def _allow_long_fields() -> None:
    # The csv module refuses fields over 128 KB; one enormous row is still a row.
    if csv.field_size_limit() < 2**31 - 1:
        csv.field_size_limit(2**31 - 1)
