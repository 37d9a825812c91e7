"""Write a mini-batch's rows to the staging table with PostgreSQL's ``COPY ... FROM STDIN``.

On PostgreSQL through psycopg 3 a ``COPY`` of 50,000 rows takes a fraction of a second where
``INSERT``s take seconds. It runs on the DBAPI connection of the SQLAlchemy connection it is
given, so it is part of that connection's transaction: the staged rows still commit together
with the delete of the mini-batch's older rows and its done record. psycopg writes each value
with the adapter of its Python type (the values ``pyarrow`` gives, as for an ``INSERT``):
``None`` as ``NULL``, timestamps with their zone, decimals, booleans and bytes as themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection


def can_copy(conn: Connection) -> bool:
    """Tell whether ``conn`` is PostgreSQL through psycopg 3, which has ``cursor.copy``."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def copy_rows(
    conn: Connection, table: Table, own: dict[str, str], names: list[str], batches: Iterable[Any]
) -> None:
    """COPY the record batches' rows (columns ``names``) into ``table``, the ``own`` values first on each."""
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(_name(table), _columns([*own, *names]))
    fixed = tuple(own.values())
    driver = conn.connection.driver_connection
    assert driver is not None, "a connection in a transaction has its DBAPI connection"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for batch in batches:
            for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                copy.write_row(fixed + row)


def _name(table: Table) -> Any:
    from psycopg import sql

    return sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)


def _columns(names: list[str]) -> Any:
    from psycopg import sql

    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


__all__ = ["can_copy", "copy_rows"]
