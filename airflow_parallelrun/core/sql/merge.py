"""Move a run's staged rows into the target table, in one transaction, once per run.

The aggregate step calls this when the run succeeded. One transaction: (``replace``: delete the
target's rows), insert the staged rows of every succeeded mini-batch (append, or each dialect's
upsert in mini-batch order, so a later mini-batch's row wins), write the run's merge record, and
delete the staged rows and done records of the run (and of the runs it resumed). A retried
aggregate finds the merge record and writes nothing again; one killed before the commit leaves
the target as it was and the staged rows in place.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import SqlOutputError
from airflow_parallelrun.core.failpoints import failpoint
from airflow_parallelrun.core.sql.engine import database_message
from airflow_parallelrun.core.sql.sink import STAGING_SUFFIX, SqlSink
from airflow_parallelrun.core.sql.staging import engine_of, stored_key
from airflow_parallelrun.core.sql.tables import (
    MINI_BATCH,
    OWN_COLUMNS,
    RUN_KEY,
    bookkeeping,
    reflect,
    target,
)
from airflow_parallelrun.core.sql.upsert import insert_from

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

#: A succeeded mini-batch: (its run key, its id).
Pair = tuple[str | None, str]


def merge_run(
    sink: SqlSink, run_key: str | None, accepted: Collection[str | None], succeeded: Sequence[Pair]
) -> dict[str, Any]:
    """Move the staged rows of the ``succeeded`` mini-batches into the target; return the outcome.

    ``accepted`` are the run keys whose staged rows belong to this run (its own and those it
    resumed). Raises ``SqlOutputError`` naming the database and its message.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        rows, merged_before = _merge(engine_of(sink), sink, stored_key(run_key), accepted, succeeded)
    except SQLAlchemyError as exc:
        raise SqlOutputError(
            f"merging the run's rows into {sink.qualified()} in {sink.database} failed: "
            f"{database_message(exc)}. The staged rows are kept: fix the cause and clear the aggregate task"
        ) from None
    return outcome(sink, rows, merged_before)


def outcome(sink: SqlSink, rows: int, merged_before: bool = False, note: str = "") -> dict[str, Any]:
    """Return what the summary says of the SQL output."""
    return {
        "table": sink.qualified(),
        "database": sink.database,
        "if_exists": sink.table.if_exists,
        "rows_written": rows,
        "merged_by_an_earlier_try": merged_before,
        "note": note,
    }


def _merge(
    engine: Engine, sink: SqlSink, run_key: str, accepted: Collection[str | None], succeeded: Sequence[Pair]
) -> tuple[int, bool]:
    import sqlalchemy as sa

    done, merges = bookkeeping(engine, sink)
    keys = sorted({stored_key(k) for k in accepted})
    with engine.connect() as conn:
        earlier = conn.execute(sa.select(merges.c.rows).where(merges.c[RUN_KEY] == run_key)).scalar()
        if earlier is not None:
            log.info("the run's rows were merged into %s already (%d rows)", sink.qualified(), earlier)
            return int(earlier), True
        staged_rows = _done_rows(conn, done, keys)
    wanted = [(stored_key(k), mb) for k, mb in succeeded if (stored_key(k), mb) in staged_rows]
    staged = reflect(engine, sink, STAGING_SUFFIX)
    table = target(engine, sink, staged) if staged is not None else reflect(engine, sink)
    rows = sum(staged_rows[pair] for pair in wanted)
    with engine.begin() as conn:
        if sink.table.if_exists == "replace" and table is not None:
            conn.execute(table.delete())
        if staged is not None and table is not None:
            _move(conn, sink, staged, table, wanted)
        failpoint("sql_merging")
        conn.execute(
            merges.insert().values(
                {
                    RUN_KEY: run_key,
                    "rows": rows,
                    "if_exists": sink.table.if_exists,
                    "merged_at": datetime.now(UTC),
                }
            )
        )
        if staged is not None:
            conn.execute(staged.delete().where(staged.c[RUN_KEY].in_(keys)))
        conn.execute(done.delete().where(done.c[RUN_KEY].in_(keys)))
    log.info("merged %d rows into %s (%s)", rows, sink.qualified(), sink.table.if_exists)
    return rows, False


def _done_rows(conn: Connection, done: Table, keys: list[str]) -> dict[tuple[str, str], int]:
    """Return the staged row count of every mini-batch staged under ``keys`` and not merged yet."""
    import sqlalchemy as sa

    query = sa.select(done.c[RUN_KEY], done.c[MINI_BATCH], done.c.rows).where(done.c[RUN_KEY].in_(keys))
    return {(k, mb): int(n) for k, mb, n in conn.execute(query)}


def _move(
    conn: Connection, sink: SqlSink, staged: Table, table: Table, wanted: list[tuple[str, str]]
) -> None:
    """Insert the staged rows of ``wanted`` into the target: one statement per mini-batch, in order."""
    import sqlalchemy as sa

    columns = [c.name for c in staged.c if c.name not in OWN_COLUMNS]
    dialect = conn.dialect.name
    key = sink.table.key_columns if sink.table.if_exists == "upsert" else ()
    for run_key, mb in sorted(wanted, key=lambda pair: pair[1]):
        source = sa.select(*(staged.c[c] for c in columns)).where(
            staged.c[RUN_KEY] == run_key, staged.c[MINI_BATCH] == mb
        )
        conn.execute(insert_from(table, source, columns, dialect=dialect, key=key))


__all__ = ["merge_run", "outcome"]
