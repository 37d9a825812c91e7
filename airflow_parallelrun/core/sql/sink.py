"""The SQL output of a run: ``SqlTable``, the table ``run()``'s rows go to, and its bookkeeping tables.

Besides the target table, the sink uses three tables next to it (same schema), created when
missing: ``<table>__parallelrun_staging`` (each mini-batch's rows, keyed by run key and
mini-batch, until the aggregate step moves them), ``<table>__parallelrun_done`` (one record per
staged mini-batch) and ``<table>__parallelrun_merges`` (one record per run merged into the target).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.config_checks import is_template
from airflow_parallelrun.core.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

IF_EXISTS = ("append", "replace", "upsert")
STAGING_SUFFIX = "__parallelrun_staging"
DONE_SUFFIX = "__parallelrun_done"
MERGES_SUFFIX = "__parallelrun_merges"
#: PostgreSQL's identifier limit (MySQL's is 64), less the longest suffix.
MAX_TABLE_NAME = 63 - len(STAGING_SUFFIX)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_identifier(name: str, value: Any, *, limit: int = 63) -> str:
    """Return ``value`` if it is a plain SQL identifier of at most ``limit`` characters.

    >>> check_identifier("table", "scores")
    'scores'
    >>> check_identifier("table", "scores; DROP TABLE x")
    Traceback (most recent call last):
    ...
    airflow_parallelrun.core.errors.ConfigError: SqlTable table='scores; DROP TABLE x' is not a plain ...
    """
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value) or len(value) > limit:
        raise ConfigError(
            f"SqlTable {name}={value!r} is not a plain identifier of at most {limit} characters; give a "
            "name of letters, digits and underscores, not starting with a digit (e.g. 'scores'), and "
            "the schema apart with schema='analytics'"
        )
    return value


def _key_columns(key: Any) -> tuple[str, ...]:
    if key is None:
        return ()
    columns = (key,) if isinstance(key, str) else key
    if not isinstance(columns, Sequence) or not columns:
        raise ConfigError(f"SqlTable key={key!r} must be a column name or a list of them, e.g. ['id']")
    return tuple(check_identifier("key", c) for c in columns)


@dataclass(frozen=True)
class SqlTable:
    """Write what ``run()`` returns (a DataFrame, or a list of dicts) into a database table.

    ``conn_id`` (an Airflow Connection) or ``url`` (a SQLAlchemy URL) names the database,
    ``table`` and ``schema`` the table, created from the returned columns' types when missing.
    ``if_exists``: ``append`` adds the run's rows, ``replace`` replaces the table's rows with
    them (one transaction; the table, its indexes and grants stay), ``upsert`` inserts or
    updates rows by ``key`` (needs a unique index on it; created with the table). Rows are
    written exactly once, whatever task is retried or killed: each mini-batch commits its rows
    to a staging table, and the aggregate step moves a succeeded run's rows in one transaction.
    """

    conn_id: str | None = None
    url: str | URL | None = field(default=None, repr=False)
    table: str = ""
    key: Sequence[str] | str | None = None
    if_exists: str = "append"
    schema: str | None = None

    def __post_init__(self) -> None:
        # A templated conn_id is rendered by each task; url, if given, is its fallback when empty.
        if (self.conn_id is None) == (self.url is None) and not is_template(self.conn_id):
            raise ConfigError(
                f"SqlTable needs exactly one of conn_id and url (got conn_id={self.conn_id!r} and "
                f"url={'<given>' if self.url is not None else None}); give conn_id='my_db' (an Airflow "
                "Connection) or url='postgresql+psycopg://user@host/db'"
            )
        check_identifier("table", self.table, limit=MAX_TABLE_NAME)
        if self.schema is not None:
            check_identifier("schema", self.schema)
        if self.if_exists not in IF_EXISTS:
            raise ConfigError(
                f"SqlTable if_exists={self.if_exists!r} is invalid: use one of {', '.join(IF_EXISTS)}"
            )
        object.__setattr__(self, "key", _key_columns(self.key))
        if self.if_exists == "upsert" and not self.key:
            raise ConfigError(
                f"SqlTable if_exists='upsert' needs key= (got key={self.key!r}); name the column(s) "
                "that identify a row, e.g. key=['customer_id']"
            )

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(self.key or ())

    def __repr__(self) -> str:
        where = f"conn_id={self.conn_id!r}" if self.conn_id else "url=<hidden>"
        return f"SqlTable({where}, table={self.table!r}, if_exists={self.if_exists!r}, key={self.key!r})"


@dataclass(frozen=True)
class SqlSink:
    """A ``SqlTable`` with its database's URL, resolved by the task that uses it and kept in memory."""

    table: SqlTable
    url: URL = field(repr=False)

    @property
    def database(self) -> str:
        """Name the database for messages and the summary: the Connection id, or the URL without password."""
        from airflow_parallelrun.core.sql.engine import safe_url

        if self.table.conn_id:
            return f"Connection {self.table.conn_id!r}"
        return safe_url(self.url)

    def qualified(self, suffix: str = "") -> str:
        """Return a table's name for messages: ``schema.table<suffix>``."""
        name = self.table.table + suffix
        return f"{self.table.schema}.{name}" if self.table.schema else name


def bind_sink(output: SqlTable, url: str | URL | None = None) -> SqlSink:
    """Return ``output`` with its URL: ``url`` (from its Connection) or the one it was given."""
    from airflow_parallelrun.core.sql.engine import parse_url

    given = url if url is not None else output.url
    if given is None:
        raise ConfigError(f"{output!r} has a conn_id: resolve it to a URL first (hooks/sql.py)")
    return SqlSink(output, parse_url(given))


__all__ = ["IF_EXISTS", "SqlSink", "SqlTable", "bind_sink", "check_identifier"]
