"""Check what ``run()`` returned, write it as a part, and merge the parts in mini-batch order."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_parallelrun.core.errors import RunOutputError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: The parts to merge, in order: an iterable, or a function returning a fresh one each call.
Parts = Iterable[BinaryIO | None] | Callable[[], Iterable[BinaryIO | None]]

PART_EXTENSIONS = {"text": "txt", "csv": "csv", "parquet": "parquet"}


def count_results(result: Any) -> int:
    """Return how many items ``run()`` says succeeded, or explain what it should have returned."""
    if isinstance(result, list):
        return len(result)
    if _is_frame(result):
        return len(result)
    raise RunOutputError(
        f"run() returned {type(result).__name__}"
        f"{'' if result is None else ' ' + _preview(result)}; expected a list (one element per succeeded "
        "item) or a pandas DataFrame (one row per succeeded item). Return the results, e.g. "
        "`return [f'{name}: {label}' for ...]` or `return df[['id', 'prediction']]`."
    )


def _is_frame(value: Any) -> bool:
    """Tell whether ``value`` is a pandas DataFrame, without importing pandas for a list."""
    if not type(value).__module__.startswith("pandas"):
        return False
    import pandas as pd

    return isinstance(value, pd.DataFrame)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_frame(result: Any) -> pd.DataFrame:
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return result
    if result and all(isinstance(r, dict) for r in result):
        return pd.DataFrame.from_records(result)
    return pd.DataFrame({"result": [r if isinstance(r, (str, int, float, bool)) else str(r) for r in result]})


def format_text(result: Any) -> bytes:
    """Format results as Azure's append_row does: one line per item, DataFrame values space-separated.

    >>> format_text(["a.png: 3", 7])
    b'a.png: 3\\n7\\n'
    >>> import pandas as pd
    >>> format_text(pd.DataFrame({"id": [1, 2], "p": [0.5, 1.0]}))
    b'1 0.5\\n2 1.0\\n'
    >>> format_text([])
    b''
    """
    if _is_frame(result):
        if result.empty:
            return b""
        columns = [result[c].astype(str) for c in result.columns]
        lines = columns[0]
        for col in columns[1:]:
            lines = lines + " " + col
        return ("\n".join(lines.tolist()) + "\n").encode()
    if not result:
        return b""
    return ("\n".join(str(r) for r in result) + "\n").encode()


def write_part(result: Any, fmt: str, path: str) -> None:
    """Write one mini-batch's results to a local file in the merged file's format."""
    if fmt == "text":
        with open(path, "wb") as f:
            f.write(format_text(result))
    elif fmt == "csv":
        _as_frame(result).to_csv(path, index=False)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(_as_frame(result), preserve_index=False)
        pq.write_table(table, path, use_dictionary=dictionary_columns(table.schema))
    else:
        raise ValueError(f"unknown append_row_format {fmt!r}")


def dictionary_columns(schema: Any) -> list[str]:
    """Return the columns worth dictionary-encoding in parquet: all but numbers and times.

    Scores, probabilities and ids rarely repeat, so pyarrow's default of trying a dictionary
    for every column only spends time and, after its fallback, space; labels and other strings
    repeat and keep it.

    >>> import pyarrow as pa
    >>> dictionary_columns(pa.schema([("id", pa.int64()), ("p", pa.float64()), ("label", pa.string())]))
    ['label']
    """
    import pyarrow as pa

    def numeric(t: Any) -> bool:
        return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t))

    return [field.name for field in schema if not numeric(field.type)]


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
    merged = 0
    if fmt == "parquet":
        return _merge_parquet(parts, out)
    if callable(parts):
        parts = parts()
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

        def reopen() -> Iterator[BinaryIO | None]:
            for path in spilled:
                if path is None:
                    yield None
                    continue
                with open(path, "rb") as f:
                    yield f

        yield reopen


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


def _merge_parquet(parts: Parts, out: BinaryIO) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    merged = 0
    with _twice(parts) as again:
        # First pass: the footers only, to learn one schema that holds every part's values.
        schemas, empty_schema = [], None
        for part in again():
            if part is None:
                continue
            pf = pq.ParquetFile(part)
            if pf.metadata.num_rows:
                schemas.append(pf.schema_arrow)
            else:
                empty_schema = empty_schema or pf.schema_arrow
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
                    table = pf.read_row_group(i)
                    if not table.schema.equals(schema):
                        try:
                            table = table.select(schema.names).cast(schema)
                        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                            raise RunOutputError(
                                f"parquet parts cannot be merged into one schema: {schema} then "
                                f"{table.schema} ({exc}); make run() return the same columns and types "
                                "for every mini-batch"
                            ) from exc
                    writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    return merged
