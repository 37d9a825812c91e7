"""An Airflow Connection as a SQLAlchemy URL, for a SQL input (``SqlDataset``) or output (``SqlTable``).

The URL, password included, stays in the memory of the task that fetched it: it never goes to
XCom, to the run's storage, to its reports or to a log. Messages name the Connection id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_parallelrun.core.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: SQLAlchemy driver per Airflow Connection type (the drivers this package installs with its ``sql`` extra).
DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "sqlite": "sqlite",
}


def connection_sqlalchemy_url(conn: Any) -> URL:
    """Turn a fetched Connection into a SQLAlchemy URL.

    Types ``postgres``, ``mysql`` (MariaDB too) and ``sqlite`` are known; the extra's
    ``sqlalchemy_scheme`` picks another driver (``postgresql+psycopg2``) or names one for any
    other type, and its ``sqlalchemy_query`` (a JSON object) becomes the URL's query, e.g.
    ``{"sslmode": "require"}``. A ``sqlite`` Connection keeps the database file's path in host
    (as Airflow's SQLite provider does), or in schema.
    """
    from sqlalchemy.engine import URL

    extra = conn.extra_dejson
    scheme = extra.get("sqlalchemy_scheme") or DRIVERS.get(str(conn.conn_type or "").lower())
    if not scheme:
        raise ConfigError(
            f"Connection {conn.conn_id!r} has type {conn.conn_type!r}, which has no known SQLAlchemy "
            f"driver; use a type of {', '.join(sorted(DRIVERS))}, or set its extra "
            '{"sqlalchemy_scheme": "<dialect+driver>"}'
        )
    query = {str(k): str(v) for k, v in (extra.get("sqlalchemy_query") or {}).items()}
    if scheme.startswith("sqlite"):
        return URL.create(scheme, database=conn.host or conn.schema or None, query=query)
    return URL.create(
        scheme,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
        query=query,
    )


class ParallelRunSqlHook(BaseHook):
    """Read an Airflow Connection as a SQLAlchemy URL (see ``connection_sqlalchemy_url``)."""

    conn_name_attr = "conn_id"
    hook_name = "Parallel Run SQL"

    def __init__(self, conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def get_conn(self) -> URL:
        """Return the SQLAlchemy URL (engines are made where they are used)."""
        return self.sqlalchemy_url()

    def sqlalchemy_url(self) -> URL:
        return connection_sqlalchemy_url(self.get_connection(self.conn_id))


def sqlalchemy_url(conn_id: str) -> URL:
    """Return the SQLAlchemy URL of the Airflow Connection ``conn_id``."""
    return ParallelRunSqlHook(conn_id).sqlalchemy_url()
