"""Describe a SQL input: a table or a read-only query of a database, read as one consistent snapshot."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sql.engine import parse_url, safe_url
from airflow_parallelrun.core.sql.statements import check_read_only


def is_template(value: Any) -> bool:
    """Tell whether ``value`` holds Jinja, to be checked only once the partition task rendered it."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _names(value: Any, named: str) -> tuple[str, ...] | None:
    """Return ``columns`` or ``key`` as a tuple of names; raise ``ConfigError`` for anything else."""
    if value is None:
        return None
    names = (value,) if isinstance(value, str) and named == "key" else value
    if (
        isinstance(names, str)
        or not isinstance(names, Sequence)
        or not names
        or not all(isinstance(n, str) and n.strip() for n in names)
        or len(set(names)) != len(names)
    ):
        raise ConfigError(
            f"SqlDataset {named}={value!r} is not a list of distinct column names; give e.g. "
            f"{named}=['customer_id'{', ' + repr('region') if named == 'columns' else ''}]"
        )
    return tuple(names)


def _check_connection(conn_id: Any, url: Any) -> None:
    if is_template(conn_id):
        # Rendered by the partition task; url, if given, is what an empty rendering falls back on.
        if url is not None:
            parse_url(url, named="SqlDataset url")
        return
    if (conn_id is None) == (url is None):
        raise ConfigError(
            "SqlDataset needs exactly one of conn_id= (an Airflow Connection id, e.g. conn_id='warehouse') "
            f"and url= (a SQLAlchemy URL); got conn_id={conn_id!r} and "
            f"url={'<given>' if url is not None else None}"
        )
    if conn_id is not None and (not isinstance(conn_id, str) or not conn_id.strip()):
        raise ConfigError(
            f"SqlDataset conn_id={conn_id!r} must be an Airflow Connection id, e.g. 'warehouse'"
        )
    if url is not None:
        parse_url(url, named="SqlDataset url")


def check_table(table: Any) -> str:
    """Return ``table`` (``name`` or ``schema.name``); raise ``ConfigError`` for anything else."""
    if not isinstance(table, str) or not table.strip() or len(table.split(".")) > 2 or "" in table.split("."):
        raise ConfigError(
            f"SqlDataset table={table!r} is not a table name; give 'name' or 'schema.name', e.g. "
            "table='customers', or use query='SELECT ...' for anything else"
        )
    return table.strip()


def _check_source(table: Any, query: Any, columns: Any, key: Any) -> None:
    if (table is None) == (query is None):
        raise ConfigError(
            "SqlDataset needs exactly one of table= (a table name, e.g. table='customers') and query= "
            f"(a SELECT query); got table={table!r} and query={query!r}"
        )
    if query is not None and (columns is not None or key is not None):
        raise ConfigError(
            f"SqlDataset columns={columns!r} and key={key!r} go with table=, not query=; name the "
            "columns in the query's SELECT list and order it with its own ORDER BY"
        )
    if table is not None and not is_template(table):
        check_table(table)
    if query is not None and not is_template(query):
        check_read_only(query, named="SqlDataset query")


@dataclass(frozen=True)
class SqlDataset:
    """A table or a read-only query of a database; each item is a row, ``run()`` gets a DataFrame.

    The database is an Airflow Connection (``conn_id``: postgres, mysql, sqlite, or any type
    whose extra names a ``sqlalchemy_scheme``) or a SQLAlchemy ``url``. ``table`` (``name`` or
    ``schema.name``) reads ``columns`` (all by default), ordered by ``key`` (the primary key by
    default); ``query`` is one SELECT or WITH query, run in a read-only transaction. ``table``
    and ``query`` are templated by the partition task (``{{ ds }}``, ``{{ params.x }}``).

    The partition task reads the input once, in one consistent snapshot streamed into parquet
    under the run's ``output_path``, and splits that by ``mini_batch_size`` (``"50000 rows"``
    or bytes): every mini-batch sees the same snapshot, and a cleared partition task of the same
    DAG run, or a ``resume=True`` run, reuses it rather than query again.
    """

    conn_id: str | None = None
    url: Any = field(default=None, repr=False)
    table: str | None = None
    query: str | None = None
    columns: Sequence[str] | None = None
    key: str | Sequence[str] | None = None
    # The URL an adapter resolved from conn_id: kept in memory, never written anywhere.
    connection_url: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_connection(self.conn_id, self.url)
        _check_source(self.table, self.query, self.columns, self.key)
        object.__setattr__(self, "columns", _names(self.columns, "columns"))
        object.__setattr__(self, "key", _names(self.key, "key"))

    @property
    def tabular(self) -> bool:
        return True

    @property
    def path(self) -> None:
        """A SQL input has no path: its snapshot lives under the run's ``output_path``."""
        return None

    @property
    def files(self) -> None:
        return None

    def rendered(self, table: Any, query: Any) -> SqlDataset:
        """Return a copy with the rendered ``table`` and ``query``, checked again (``ConfigError``)."""
        if table is not None:
            table = check_table(table)
        if query is not None:
            query = check_read_only(query, named="SqlDataset query")
        return dataclasses.replace(self, table=table, query=query)

    def with_connection(self, url: Any) -> SqlDataset:
        """Return a copy that reaches the database at ``url`` (resolved from ``conn_id``), in memory."""
        return dataclasses.replace(self, connection_url=url)

    def engine_url(self) -> Any:
        """Return the URL to connect with; raise ``ConfigError`` if ``conn_id`` was never resolved."""
        url = self.connection_url if self.connection_url is not None else self.url
        if url is None:
            raise ConfigError(
                f"SqlDataset conn_id={self.conn_id!r} has not been resolved to a URL; run it through "
                "ParallelRunOperator (which reads the Connection), or give url= when calling the core"
            )
        return url

    @property
    def source(self) -> str:
        """Name the database as logs, reports and errors may: its Connection id, or its safe URL."""
        if self.conn_id is not None:
            return f"conn_id={self.conn_id!r}"
        return f"url={safe_url(self.url)!r}"

    def describe(self) -> str:
        """Return the input as the manifest, the summary and the report show it (no password)."""
        what = f"table={self.table!r}" if self.table is not None else f"query={_shorten(self.query)!r}"
        return f"sql {self.source} {what}"

    def fingerprint(self) -> dict[str, Any]:
        """Return what identifies this input's rows: the database (safe), the table or query, columns, key."""
        return {
            "conn_id": self.conn_id,
            "url": safe_url(self.engine_url()),
            "table": self.table,
            "query": self.query,
            "columns": list(self.columns or ()),
            "key": list(self.key or ()),
        }


def _shorten(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."
