"""The tables of a SQL sink: the target, its staging table and its two bookkeeping tables.

Each is created when missing, outside any data transaction (MySQL commits a transaction
implicitly at ``CREATE TABLE``). Several run tasks may create the same table at once: the one
that loses the race finds the table there and goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import RunOutputError, SqlOutputError
from airflow_parallelrun.core.sql.column_types import result_columns
from airflow_parallelrun.core.sql.sink import DONE_SUFFIX, MERGES_SUFFIX, STAGING_SUFFIX, SqlSink

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Engine

#: The staging table's own columns, besides the results'.
RUN_KEY = "parallelrun_run_key"
MINI_BATCH = "parallelrun_mini_batch"
OWN_COLUMNS = (RUN_KEY, MINI_BATCH)


def reflect(engine: Engine, sink: SqlSink, suffix: str = "") -> Table | None:
    """Return the sink's table ``<table><suffix>`` as the database has it, or None when missing."""
    import sqlalchemy as sa

    name, schema = sink.table.table + suffix, sink.table.schema
    if not sa.inspect(engine).has_table(name, schema=schema):
        return None
    return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=engine)


def _create(engine: Engine, table: Table, sink: SqlSink, suffix: str = "") -> Table:
    """Create ``table``; when another task created it meanwhile, return that one."""
    try:
        table.create(engine, checkfirst=True)
    except Exception:
        existing = reflect(engine, sink, suffix)
        if existing is None:
            raise
        return existing
    return table


def bookkeeping(engine: Engine, sink: SqlSink) -> tuple[Table, Table]:
    """Return the done and merges tables, created when missing."""
    import sqlalchemy as sa

    meta, schema, name = sa.MetaData(), sink.table.schema, sink.table.table
    done = sa.Table(
        name + DONE_SUFFIX,
        meta,
        sa.Column(RUN_KEY, sa.String(32), primary_key=True),
        sa.Column(MINI_BATCH, sa.String(64), primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )
    merges = sa.Table(
        name + MERGES_SUFFIX,
        meta,
        sa.Column(RUN_KEY, sa.String(32), primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("if_exists", sa.String(16), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )
    return _create(engine, done, sink, DONE_SUFFIX), _create(engine, merges, sink, MERGES_SUFFIX)


def staging(engine: Engine, sink: SqlSink, arrow_schema: Any) -> Table:
    """Return the staging table, created from a part's columns when missing; check the part fits it."""
    import sqlalchemy as sa

    table = reflect(engine, sink, STAGING_SUFFIX)
    if table is None:
        table = _create(
            engine,
            sa.Table(
                sink.table.table + STAGING_SUFFIX,
                sa.MetaData(),
                sa.Column(RUN_KEY, sa.String(32), nullable=False),
                sa.Column(MINI_BATCH, sa.String(64), nullable=False),
                *result_columns(arrow_schema, sink.table.key_columns),
                sa.Index(None, RUN_KEY, MINI_BATCH),
                schema=sink.table.schema,
            ),
            sink,
            STAGING_SUFFIX,
        )
    if extra := [n for n in arrow_schema.names if n not in table.c]:
        raise RunOutputError(
            f"run() returned columns {extra} that the staging table {sink.qualified(STAGING_SUFFIX)} "
            f"lacks (it has {[c.name for c in table.c if c.name not in OWN_COLUMNS]}, from earlier "
            "mini-batches); make run() return the same columns for every mini-batch"
        )
    return table


def target(engine: Engine, sink: SqlSink, staged: Table) -> Table:
    """Return the target table, created with the staged result columns when missing.

    A created table gets ``key`` as its primary key; an existing one must have a unique index
    on ``key`` for an upsert, and every staged column.
    """
    import sqlalchemy as sa

    key = sink.table.key_columns
    table = reflect(engine, sink)
    if table is None:
        # Never AUTO_INCREMENT: MySQL would turn a returned id 0 into the next number.
        results = [c for c in staged.c if c.name not in OWN_COLUMNS]
        columns = [
            sa.Column(c.name, c.type, nullable=c.name not in key, autoincrement=False) for c in results
        ]
        constraint = [sa.PrimaryKeyConstraint(*key)] if key else []
        meta = sa.MetaData()
        created = sa.Table(sink.table.table, meta, *columns, *constraint, schema=sink.table.schema)
        return _create(engine, created, sink)
    if missing := [c.name for c in staged.c if c.name not in OWN_COLUMNS and c.name not in table.c]:
        raise SqlOutputError(
            f"the table {sink.qualified()} of {sink.database} has no column(s) {missing}, which run() "
            "returns; add them (ALTER TABLE ... ADD COLUMN), or return only the table's columns"
        )
    if sink.table.if_exists == "upsert" and not has_unique_index(engine, sink, key):
        raise SqlOutputError(
            f"the table {sink.qualified()} of {sink.database} has no primary key or unique index on "
            f"{list(key)}, which upsert needs to find a row; create one, e.g. CREATE UNIQUE INDEX "
            f"{sink.table.table}_key ON {sink.qualified()} ({', '.join(key)})"
        )
    return table


def has_unique_index(engine: Engine, sink: SqlSink, key: tuple[str, ...]) -> bool:
    """Tell whether the target has a primary key, unique constraint or unique index on exactly ``key``."""
    import sqlalchemy as sa

    inspector = sa.inspect(engine)
    name, schema = sink.table.table, sink.table.schema
    candidates: list[list[Any]] = [
        inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
    ]
    candidates += [u["column_names"] for u in inspector.get_unique_constraints(name, schema=schema)]
    candidates += [i["column_names"] for i in inspector.get_indexes(name, schema=schema) if i.get("unique")]
    return any(set(c) == set(key) for c in candidates)


__all__ = ["MINI_BATCH", "OWN_COLUMNS", "RUN_KEY", "bookkeeping", "reflect", "staging", "target"]
