"""The SQLAlchemy column type for each type ``run()``'s results hold (as Arrow reads the part)."""

from __future__ import annotations

from typing import Any

#: Key columns that hold strings get a bounded type: MySQL cannot index an unbounded TEXT.
KEY_STRING_LENGTH = 255


def sql_type(arrow_type: Any, *, key: bool = False) -> Any:
    """Return the SQLAlchemy type for an Arrow type; strings in a key are ``VARCHAR(255)``.

    >>> import pyarrow as pa
    >>> [type(sql_type(t)).__name__ for t in (pa.int64(), pa.float64(), pa.string(), pa.bool_())]
    ['BigInteger', 'Double', 'Text', 'Boolean']
    >>> sql_type(pa.timestamp("us", tz="UTC")).timezone, sql_type(pa.string(), key=True).length
    (True, 255)
    """
    import pyarrow as pa
    import sqlalchemy as sa

    t = pa.types
    if t.is_boolean(arrow_type):
        return sa.Boolean()
    if t.is_integer(arrow_type):
        return sa.BigInteger()
    if t.is_floating(arrow_type):
        return sa.Double()
    if t.is_decimal(arrow_type):
        return sa.Numeric(arrow_type.precision, arrow_type.scale)
    if t.is_timestamp(arrow_type):
        return sa.DateTime(timezone=arrow_type.tz is not None)
    if t.is_date(arrow_type):
        return sa.Date()
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type):
        return sa.LargeBinary()
    if key or t.is_null(arrow_type):
        # A column all null says nothing of its type: a string holds what later rows bring.
        return sa.String(KEY_STRING_LENGTH)
    return sa.Text()


def result_columns(schema: Any, key: tuple[str, ...] = ()) -> list[Any]:
    """Return a nullable SQLAlchemy column per field of an Arrow schema (key columns not null)."""
    import sqlalchemy as sa

    return [
        sa.Column(f.name, sql_type(f.type, key=f.name in key), nullable=f.name not in key) for f in schema
    ]


__all__ = ["KEY_STRING_LENGTH", "result_columns", "sql_type"]
