"""Merge the parts of a run into the one output file, in mini-batch order, in bounded memory."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from airflow_parallelrun.core.errors import RunOutputError
from airflow_parallelrun.core.outputs.parts import dictionary_columns

log = logging.getLogger(__name__)

#: The parts to merge, in order: an iterable, or a function returning a fresh one each call.
Parts = Iterable[BinaryIO | None] | Callable[[], Iterable[BinaryIO | None]]


def merge_parts(parts: Parts, fmt: str, out: BinaryIO) -> int:
    """Concatenate parts, in the order given, into ``out``; return the number of parts merged.

    Memory stays bounded by one row group or one copy buffer, whatever the number of parts. csv
    keeps the first part's header only. Parquet parts are cast to one schema that holds every
    part's values: an int column in one part and a float one (NaN for a missing value) in
    another give a float column, a column all null in one part takes the others' type, and
    types that cannot be promoted (a number and a string) give a string column. Learning that
    schema takes a first pass over the parts' footers: give ``parts`` as a function returning
    a fresh iterable (or as a sequence) to read each part twice; a one-shot iterator is spilled
    to local temporary files.
    """
    if fmt == "parquet":
        return _merge_parquet(parts, out)
    return _merge_lines(parts() if callable(parts) else parts, fmt, out)


def _merge_lines(parts: Iterable[BinaryIO | None], fmt: str, out: BinaryIO) -> int:
    """Concatenate text or csv parts; csv keeps the first header and refuses a different one."""
    merged = 0
    header: bytes | None = None
    empty_header: bytes | None = None
    for part in parts:
        if part is None:
            continue
        if fmt == "csv":
            first = part.readline()
            chunk = part.read(1024 * 1024)
            if not chunk:
                # A part without rows (run() returned []) adds nothing, whatever its columns.
                empty_header = empty_header or first
                merged += 1
                continue
            if header is None:
                header = first
                out.write(first)
            elif first != header:
                raise RunOutputError(
                    f"csv parts have different columns: {header!r} then {first!r}; make run() return the "
                    "same columns for every mini-batch"
                )
            out.write(chunk)
        shutil.copyfileobj(part, out, 1024 * 1024)
        merged += 1
    if fmt == "csv" and header is None and empty_header:
        out.write(empty_header)
    return merged


@contextlib.contextmanager
def _twice(parts: Parts) -> Iterator[Callable[[], Iterable[BinaryIO | None]]]:
    """Yield a function that returns the parts afresh each time it is called."""
    if callable(parts):
        yield parts
        return
    if iter(parts) is not parts:
        sequence = parts
        yield lambda: sequence
        return
    with tempfile.TemporaryDirectory(prefix="parallelrun-merge-") as folder:
        spilled: list[str | None] = []
        for i, part in enumerate(parts):
            if part is None:
                spilled.append(None)
                continue
            path = os.path.join(folder, f"{i:08d}.parquet")
            with open(path, "wb") as f:
                shutil.copyfileobj(part, f, 1024 * 1024)
            spilled.append(path)

        yield lambda: reopened(spilled)


def reopened(paths: Iterable[str | None]) -> Iterator[BinaryIO | None]:
    """Open each local file of ``paths`` in turn (None stays None), closing it when the next is asked."""
    for path in paths:
        if path is None:
            yield None
            continue
        with open(path, "rb") as f:
            yield f


def unified_schema(schemas: Sequence[Any]) -> Any:
    """Return the schema every one of ``schemas`` can be cast to, in the first one's column order.

    Types are promoted as pyarrow promotes them (``promote_options="permissive"``); a column
    whose types cannot be promoted becomes a string column. Parts with different columns raise
    ``RunOutputError``.

    >>> import pyarrow as pa
    >>> unified_schema([pa.schema([("id", pa.int64()), ("p", pa.int64())]),
    ...                 pa.schema([("p", pa.float64()), ("id", pa.null())])])
    id: int64
    p: double
    """
    import pyarrow as pa

    first = schemas[0]
    for schema in schemas[1:]:
        if sorted(schema.names) != sorted(first.names):
            raise RunOutputError(
                f"parquet parts have different columns: {first.names} then {schema.names}; make run() "
                "return the same columns for every mini-batch"
            )
    if all(schema.equals(first) for schema in schemas):
        return first
    fields = []
    for name in first.names:
        types = list(dict.fromkeys(schema.field(name).type for schema in schemas))
        # A column all null in a part says nothing of its type; it casts to the others' as it is
        # (permissive promotion would widen null and string to large_string).
        types = [t for t in types if not pa.types.is_null(t)] or types
        try:
            merged = pa.unify_schemas(
                [pa.schema([(name, t)]) for t in types], promote_options="permissive"
            ).field(name)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            log.warning(
                "parquet parts hold column %r as %s: the merged file holds it as strings",
                name,
                " and ".join(map(str, types)),
            )
            merged = pa.field(name, pa.string())
        fields.append(merged)
    # No pandas metadata: it would describe the first part's types, not the merged ones.
    return pa.schema(fields)


def _footer_schemas(parts: Iterable[BinaryIO | None]) -> tuple[list[Any], Any]:
    """Read the parts' footers only: the schemas of the parts with rows, and one of an empty part."""
    import pyarrow.parquet as pq

    schemas, empty_schema = [], None
    for part in parts:
        if part is None:
            continue
        pf = pq.ParquetFile(part)
        if pf.metadata.num_rows:
            schemas.append(pf.schema_arrow)
        else:
            empty_schema = empty_schema or pf.schema_arrow
    return schemas, empty_schema


def _cast(table: Any, schema: Any) -> Any:
    """Return a part's row group cast to the merged schema, or raise ``RunOutputError`` saying why not."""
    import pyarrow as pa

    if table.schema.equals(schema):
        return table
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise RunOutputError(
            f"parquet parts cannot be merged into one schema: {schema} then "
            f"{table.schema} ({exc}); make run() return the same columns and types "
            "for every mini-batch"
        ) from exc


def _merge_parquet(parts: Parts, out: BinaryIO) -> int:
    """Write every part's row groups into one parquet file of the parts' unified schema."""
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    merged = 0
    with _twice(parts) as again:
        schemas, empty_schema = _footer_schemas(again())
        if not schemas:
            if empty_schema is not None:
                pq.ParquetWriter(out, empty_schema).close()
            return sum(part is not None for part in again())
        schema = unified_schema(schemas)
        try:
            writer = pq.ParquetWriter(out, schema, use_dictionary=dictionary_columns(schema))
            for part in again():
                if part is None:
                    continue
                merged += 1
                pf = pq.ParquetFile(part)
                # A part without rows (run() returned []) adds nothing, whatever its schema.
                for i in range(pf.num_row_groups if pf.metadata.num_rows else 0):
                    writer.write_table(_cast(pf.read_row_group(i), schema))
        finally:
            if writer is not None:
                writer.close()
    return merged
