"""Check what ``run()`` returned, count its items, and write it as a part in the merged file's format."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import RunOutputError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: ``rows``: the part of a run with a SQL sink, whatever the merged file's format: parquet, from
#: a DataFrame or a list of dicts only (the sink needs named columns).
PART_EXTENSIONS = {"text": "txt", "csv": "csv", "parquet": "parquet", "rows": "parquet"}


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
    >>> format_text(pd.DataFrame({"id": [1, 2], "label": ["a", None]}))
    b'1 a\\n2 nan\\n'
    >>> format_text([])
    b''
    """
    if _is_frame(result):
        if result.empty:
            return b""
        # map(str), not astype(str): pandas 3 keeps a missing string missing through astype(str).
        columns = [result[c].astype(object).map(str) for c in result.columns]
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
    elif fmt in ("parquet", "rows"):
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if fmt == "rows":
            check_rows(result)
        # No rows to name columns by: an empty part, not one with a column called "result".
        frame = _as_frame(result) if fmt == "parquet" or len(result) else pd.DataFrame()
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, path, use_dictionary=dictionary_columns(table.schema))
    else:
        raise ValueError(f"unknown append_row_format {fmt!r}")


def check_rows(result: Any) -> None:
    """Refuse a result a SQL table cannot take: anything but a DataFrame or a list of dicts.

    >>> check_rows([{"id": 1, "score": 0.5}]); check_rows([])
    >>> check_rows(["a.png: 3"])
    Traceback (most recent call last):
    ...
    airflow_parallelrun.core.errors.RunOutputError: run() returned a list of str ('a.png: 3'); ...
    """
    if _is_frame(result) or all(isinstance(r, dict) for r in result):
        return
    odd = next(r for r in result if not isinstance(r, dict))
    raise RunOutputError(
        f"run() returned a list of {type(odd).__name__} ({_preview(odd)}); with output=SqlTable(...) "
        "each result is a row of the table: return a pandas DataFrame or a list of dicts, e.g. "
        "`return df[['id', 'score']]` or `return [{'id': i, 'score': s} for ...]`"
    )


def as_format(part: bytes, fmt: str) -> bytes:
    """Return a parquet part (a SQL sink's) in the merged file's format ``fmt``.

    >>> import io, pyarrow as pa, pyarrow.parquet as pq
    >>> buf = io.BytesIO(); pq.write_table(pa.table({"id": [1, 2], "p": [0.5, 1.0]}), buf)
    >>> as_format(buf.getvalue(), "text"), as_format(buf.getvalue(), "csv")
    (b'1 0.5\\n2 1.0\\n', b'id,p\\n1,0.5\\n2,1.0\\n')
    """
    import io

    import pyarrow.parquet as pq

    if fmt == "parquet":
        return part
    frame = pq.read_table(io.BytesIO(part)).to_pandas()
    if fmt == "text":
        return format_text(frame)
    return bytes(frame.to_csv(index=False).encode())


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
