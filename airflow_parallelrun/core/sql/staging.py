"""Stage one mini-batch's rows: its rows and its done record commit in one transaction.

The run task calls this after ``run()`` succeeded and before it publishes the mini-batch's
status. A task killed before the commit leaves nothing; one killed after it and before the
status runs the mini-batch again, and its retry replaces the same rows (delete, then insert,
keyed by run key and mini-batch), never adds a second copy.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import SqlOutputError
from airflow_parallelrun.core.failpoints import failpoint
from airflow_parallelrun.core.sql.copy_rows import can_copy, copy_rows
from airflow_parallelrun.core.sql.engine import database_message, make_engine
from airflow_parallelrun.core.sql.sink import STAGING_SUFFIX, SqlSink
from airflow_parallelrun.core.sql.tables import MINI_BATCH, RUN_KEY, bookkeeping, reflect, staging

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

#: Rows per INSERT round trip.
INSERT_ROWS = 10_000
#: Rows per record batch read from the part for a COPY (one COPY streams them all).
COPY_ROWS = 10_000
#: One engine per database for the life of the task process: a task stages several mini-batches.
_engines: dict[str, Engine] = {}


def engine_of(sink: SqlSink) -> Engine:
    """Return this process's engine for the sink's database."""
    key = sink.url.render_as_string(hide_password=False)
    if key not in _engines:
        _engines[key] = make_engine(sink.url)
    return _engines[key]


def stored_key(run_key: str | None) -> str:
    """Return the run key as the tables store it (a run without key: ``-``)."""
    return run_key or "-"


def stage_part(sink: SqlSink, run_key: str | None, mb_id: str, part_path: str) -> int:
    """Replace the staged rows of ``mb_id`` with those of its parquet part; return how many.

    Raises ``SqlOutputError`` naming the database (never its password) and its message.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        rows = _stage(engine_of(sink), sink, stored_key(run_key), mb_id, part_path)
    except SQLAlchemyError as exc:
        raise SqlOutputError(
            f"writing the rows of {mb_id} to {sink.qualified(STAGING_SUFFIX)} in {sink.database} failed: "
            f"{database_message(exc)}. Check the database and that its user may create and write "
            "these tables; the task's retry stages the mini-batch again"
        ) from None
    failpoint(f"sql_staged:{mb_id}")
    log.info("%s: staged %d rows for %s in %s", mb_id, rows, sink.qualified(), sink.database)
    return rows


def _stage(engine: Engine, sink: SqlSink, run_key: str, mb_id: str, part_path: str) -> int:
    import pyarrow.parquet as pq

    part = pq.ParquetFile(part_path)
    rows = part.metadata.num_rows
    done, _ = bookkeeping(engine, sink)
    # A part without columns (run() returned []) has no rows to stage, but may replace some.
    names = part.schema_arrow.names
    table = staging(engine, sink, part.schema_arrow) if names else reflect(engine, sink, STAGING_SUFFIX)
    mine = {RUN_KEY: run_key, MINI_BATCH: mb_id}
    with engine.begin() as conn:
        if table is not None:
            conn.execute(table.delete().where(*_is(table, mine)))
            if rows:
                _insert(conn, table, mine, part)
        failpoint(f"sql_staging:{mb_id}")
        conn.execute(done.delete().where(*_is(done, mine)))
        conn.execute(done.insert().values(**mine, rows=rows, written_at=datetime.now(UTC)))
    return int(rows)


def _insert(conn: Connection, table: Table, mine: dict[str, str], part: Any) -> None:
    """Insert the part's rows: by COPY on PostgreSQL (psycopg), else by batches of INSERTs."""
    if can_copy(conn):
        copy_rows(conn, table, mine, part.schema_arrow.names, part.iter_batches(COPY_ROWS))
        return
    for batch in part.iter_batches(INSERT_ROWS):
        conn.execute(table.insert(), [{**row, **mine} for row in batch.to_pylist()])


def _is(table: Any, values: dict[str, str]) -> list[Any]:
    return [table.c[name] == value for name, value in values.items()]


__all__ = ["engine_of", "stage_part", "stored_key"]
