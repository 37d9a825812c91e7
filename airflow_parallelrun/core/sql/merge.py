"""Move a run's staged rows into the target table, in one transaction, each mini-batch once.

The aggregate step calls this when the run succeeded. One transaction: (``replace``, at the
run's first merge: delete the target's rows), insert the staged rows of every succeeded
mini-batch (append, or each dialect's upsert, in mini-batch order, so a later mini-batch's row
wins), delete those staged rows and their done records, and add their count to the run's merge
record. What is moved leaves the staging table in the same commit: a retried aggregate moves
nothing twice, one killed before the commit leaves the target as it was, and a mini-batch
cleared and run again after the run succeeded is moved by the next aggregate (``replace`` then
keeps the rows the run moved before).
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
        moved, total = _merge(engine_of(sink), sink, stored_key(run_key), accepted, succeeded)
    except SQLAlchemyError as exc:
        raise SqlOutputError(
            f"merging the run's rows into {sink.qualified()} in {sink.database} failed: "
            f"{database_message(exc)}. The staged rows are kept: fix the cause and clear the aggregate task"
        ) from None
    return outcome(sink, total, moved)


def outcome(sink: SqlSink, rows: int, moved: int = 0, note: str = "") -> dict[str, Any]:
    """Return what the summary says of the SQL output: ``rows`` written by the run, ``moved`` by this try."""
    return {
        "table": sink.qualified(),
        "database": sink.database,
        "if_exists": sink.table.if_exists,
        "rows_written": rows,
        "rows_written_by_this_try": moved,
        "note": note,
    }


def _merge(
    engine: Engine, sink: SqlSink, run_key: str, accepted: Collection[str | None], succeeded: Sequence[Pair]
) -> tuple[int, int]:
    """Move what is staged of ``succeeded``; return the rows moved now and by the run in all."""
    import sqlalchemy as sa

    done, merges = bookkeeping(engine, sink)
    keys = sorted({stored_key(k) for k in accepted})
    with engine.connect() as conn:
        earlier = conn.execute(sa.select(merges.c.rows).where(merges.c[RUN_KEY] == run_key)).scalar()
        staged_rows = _done_rows(conn, done, keys)
    wanted = sorted({(stored_key(k), mb) for k, mb in succeeded} & set(staged_rows), key=lambda p: p[1])
    rows = sum(staged_rows[pair] for pair in wanted)
    staged = reflect(engine, sink, STAGING_SUFFIX)
    table = target(engine, sink, staged) if staged is not None else reflect(engine, sink)
    with engine.begin() as conn:
        if sink.table.if_exists == "replace" and earlier is None and table is not None:
            conn.execute(table.delete())
        for pair in wanted:
            if staged is not None and table is not None:
                _move(conn, sink, staged, table, pair)
            conn.execute(done.delete().where(*_is(done, pair)))
        failpoint("sql_merging")
        _record(conn, merges, run_key, earlier, rows, sink.table.if_exists)
    log.info("moved %d rows of %d mini-batches into %s", rows, len(wanted), sink.qualified())
    return rows, int(earlier or 0) + rows


def _record(conn: Connection, merges: Table, run_key: str, earlier: int | None, rows: int, mode: str) -> None:
    """Add ``rows`` to the run's merge record, written at its first merge."""
    now = datetime.now(UTC)
    if earlier is None:
        conn.execute(
            merges.insert().values({RUN_KEY: run_key, "rows": rows, "if_exists": mode, "merged_at": now})
        )
    else:
        where = merges.c[RUN_KEY] == run_key
        conn.execute(merges.update().where(where).values(rows=merges.c.rows + rows, merged_at=now))


def _is(table: Table, pair: tuple[str, str]) -> tuple[Any, Any]:
    return table.c[RUN_KEY] == pair[0], table.c[MINI_BATCH] == pair[1]


def _done_rows(conn: Connection, done: Table, keys: list[str]) -> dict[tuple[str, str], int]:
    """Return the staged row count of every mini-batch staged under ``keys`` and not merged yet."""
    import sqlalchemy as sa

    query = sa.select(done.c[RUN_KEY], done.c[MINI_BATCH], done.c.rows).where(done.c[RUN_KEY].in_(keys))
    return {(k, mb): int(n) for k, mb, n in conn.execute(query)}


def _move(conn: Connection, sink: SqlSink, staged: Table, table: Table, pair: tuple[str, str]) -> None:
    """Insert one mini-batch's staged rows into the target, then delete them from the staging table."""
    import sqlalchemy as sa

    columns = [c.name for c in staged.c if c.name not in OWN_COLUMNS]
    key = sink.table.key_columns if sink.table.if_exists == "upsert" else ()
    source = sa.select(*(staged.c[c] for c in columns)).where(*_is(staged, pair))
    conn.execute(insert_from(table, source, columns, dialect=conn.dialect.name, key=key))
    conn.execute(staged.delete().where(*_is(staged, pair)))


__all__ = ["merge_run", "outcome"]
