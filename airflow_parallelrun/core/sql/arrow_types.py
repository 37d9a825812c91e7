"""Give a SQL input's columns arrow types: from the database's types, else from the first rows read.

A table's reflected types map directly (an integer stays an integer, nullable or not; a
NUMERIC(p, s) becomes decimal(p, s); a timestamp keeps its time zone). A query's columns, and
types with no fixed arrow form, take the type arrow infers from the first rows that are not
NULL; a decimal is widened to 38 digits keeping its scale (the cursor's, when it says it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

#: How many chunks may be held while a column is still all NULL, before it is typed as text.
MAX_PENDING_CHUNKS = 4


def arrow_type(sql_type: Any) -> pa.DataType | None:
    """Return the arrow type of a SQLAlchemy type, or None when it is left to the values."""
    import pyarrow as pa
    from sqlalchemy import types as t

    simple = [
        (t.Boolean, pa.bool_()),
        (t.SmallInteger, pa.int16()),
        (t.BigInteger, pa.int64()),
        (t.Integer, pa.int64()),
        (t.Float, pa.float64()),
        (t.Date, pa.date32()),
        (t.Time, pa.time64("us")),
        (t.Interval, pa.duration("us")),
        (t.LargeBinary, pa.binary()),
        (t.String, pa.string()),
    ]
    if isinstance(sql_type, t.DateTime):
        return pa.timestamp("us", tz="UTC" if sql_type.timezone else None)
    if isinstance(sql_type, t.Numeric) and not isinstance(sql_type, t.Float):
        return _decimal(sql_type.precision, sql_type.scale)
    for kind, arrow in simple:
        if isinstance(sql_type, kind):
            return arrow
    return None


def _decimal(precision: int | None, scale: int | None) -> pa.DataType | None:
    import pyarrow as pa

    if precision is None or not 0 < precision <= 76:
        return None
    return pa.decimal128(precision, scale or 0) if precision <= 38 else pa.decimal256(precision, scale or 0)


def chunk_table(names: Sequence[str], rows: Sequence[Sequence[Any]], types: Sequence[Any]) -> pa.Table:
    """Return ``rows`` as an arrow table, each column of its known type or inferred."""
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = [pa.array(list(values), type=kind) for values, kind in zip(columns, types, strict=True)]
    return pa.Table.from_arrays(arrays, names=list(names))


def settle_schema(
    pending: Sequence[pa.Table], known: Sequence[Any], scales: Sequence[int | None], *, final: bool
) -> pa.Schema | None:
    """Return the snapshot's schema once every column's type is known (``known``) or seen in ``pending``.

    None means: read another chunk. A column that stays all NULL is typed as text after
    ``MAX_PENDING_CHUNKS`` chunks (or NULL if the read ended), so memory stays bounded.
    """
    import pyarrow as pa

    fields = []
    for i, name in enumerate(pending[0].column_names):
        kind = (
            known[i]
            if known[i] is not None
            else _seen_type(pending, i, scales[i] if i < len(scales) else None)
        )
        if kind is None:
            if not final and len(pending) < MAX_PENDING_CHUNKS:
                return None
            kind = pa.null() if final else pa.string()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _seen_type(pending: Sequence[pa.Table], i: int, scale: int | None) -> pa.DataType | None:
    """Return the type arrow gave column ``i`` in the first chunk where it is not all NULL."""
    import pyarrow as pa

    kind = next(
        (t.schema.field(i).type for t in pending if not pa.types.is_null(t.schema.field(i).type)), None
    )
    if kind is not None and pa.types.is_decimal(kind):
        # Later chunks may hold wider values: keep the scale, widen the precision.
        scale = scale if scale is not None else kind.scale
        return pa.decimal128(38, scale) if kind.precision <= 38 else pa.decimal256(76, scale)
    return kind
