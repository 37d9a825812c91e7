"""Build the one statement a SQL input runs: a reflected table's columns in key order, or the query.

Nothing is built by joining user values into SQL text: a table is reflected and selected with
SQLAlchemy Core (names quoted by the dialect), and a query runs as the user wrote it, checked
read-only first.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sql.arrow_types import arrow_type

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from airflow_parallelrun.core.sql.source import SqlDataset

# What SQLAlchemy's text() would take for a bind parameter (":name"): escaped, since a query has none.
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def statement(conn: Connection, dataset: SqlDataset) -> tuple[Any, list[Any]]:
    """Return the statement to run and the arrow type of each column it returns (None: inferred)."""
    from sqlalchemy import text

    if dataset.query is not None:
        return text(_BIND.sub(r"\\:\1", dataset.query)), []
    return _table_select(conn, dataset)


def _table_select(conn: Connection, dataset: SqlDataset) -> tuple[Any, list[Any]]:
    from sqlalchemy import MetaData, Table, select

    assert dataset.table is not None
    schema, _, name = dataset.table.rpartition(".")
    table = Table(name, MetaData(), schema=schema or None, autoload_with=conn)
    columns = [_column(table, c, "columns") for c in dataset.columns] if dataset.columns else list(table.c)
    order = [_column(table, c, "key") for c in dataset.key] if dataset.key else list(table.primary_key)
    return select(*columns).order_by(*order), [arrow_type(c.type) for c in columns]


def _column(table: Any, name: str, named: str) -> Any:
    if name not in table.c:
        raise ConfigError(
            f"SqlDataset {named} names column {name!r}, which table {table.fullname!r} does not have; "
            f"its columns are {', '.join(table.c.keys())}"
        )
    return table.c[name]
