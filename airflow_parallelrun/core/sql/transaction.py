"""Open one read-only transaction that sees one consistent snapshot of the database.

- PostgreSQL: REPEATABLE READ, READ ONLY (the driver's read-only flag): every statement of the
  transaction sees the rows committed before its first one, and a write fails.
- MySQL / MariaDB: REPEATABLE READ, ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``.
- SQLite: ``PRAGMA query_only`` and one ``BEGIN``: a read transaction sees one version of the file.

Other dialects get SERIALIZABLE if they take it, else their default; the query check of
:mod:`airflow_parallelrun.core.sql.statements` still refuses writes before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


@contextmanager
def read_only_snapshot(engine: Engine) -> Iterator[Connection]:
    """Yield a connection inside a read-only, consistent-snapshot transaction; roll it back after."""
    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        elif dialect in ("mysql", "mariadb"):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        elif dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
            conn.exec_driver_sql("BEGIN")
        else:
            conn = conn.execution_options(isolation_level="SERIALIZABLE")
        try:
            yield conn
        finally:
            conn.rollback()
