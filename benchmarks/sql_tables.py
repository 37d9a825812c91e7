"""Workload (d)'s database side: the customers table in PostgreSQL, the score tables, their digests.

Nothing here is timed. The customers table (``<prefix>_customers_<size>``) is made once with a
fixed seed by PostgreSQL's ``COPY`` and reused while its comment says it holds the same rows
(``rows=<n> seed=<s>``) and it has them. Each contender writes its scores into a table of its own
(``<prefix>_scores_<size>_<contender>``), dropped before each of its jobs so every job starts from
no table, as the baseline's ``to_sql`` does.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The machine's PostgreSQL (trust authentication, no password): the issue's database.
POSTGRES_URL = os.environ.get(
    "PARALLELRUN_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: The Airflow Connection id our contenders read and write through (an ``AIRFLOW_CONN_`` variable).
CONN_ID = "parallelrun_bench_postgres"
#: The contenders' part of their score tables' names.
CONTENDER_TABLES = {"ours-scheduler": "sched", "ours-dags-test": "dagtest", "process-pool": "pool"}
#: Scores are compared rounded to 12 decimals: a batch of another size may round a dot product
#: differently in its last bit, and that is not a different score.
SCORE_DECIMALS = 12


def _repo_dags() -> None:
    dags = str(Path(__file__).resolve().parent.parent / "dags")
    if dags not in sys.path:
        sys.path.insert(0, dags)


@dataclass(frozen=True)
class SqlTables:
    """Where workload (d) reads and writes: the database URL, the table names of one size, and its
    rows per mini-batch (the baseline's ``chunksize``)."""

    url: str
    prefix: str
    size: str
    mini_batch_rows: int = 50_000

    def __post_init__(self) -> None:
        # SqlTable's names leave room for its staging tables' suffix: at most 42 characters.
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,19}", self.prefix):
            raise ValueError(
                f"--sql-prefix={self.prefix!r} is not a table name prefix; use lower-case letters, "
                "digits and _ (at most 20), e.g. 'parallelrun_bench'"
            )

    @property
    def customers(self) -> str:
        return f"{self.prefix}_customers_{self.size}"

    def scores(self, contender: str) -> str:
        short = CONTENDER_TABLES.get(contender, contender.replace("-", "_"))
        return f"{self.prefix}_scores_{self.size}_{short}"

    def connection_json(self) -> str:
        """Return the database as an ``AIRFLOW_CONN_<ID>`` value, the way users define Connections."""
        import json

        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        return json.dumps(
            {
                "conn_type": "postgres",
                "host": url.host,
                "port": url.port,
                "login": url.username,
                "password": url.password or "",
                "schema": url.database,
            }
        )


def safe_url(url: str) -> str:
    """Return ``url`` with its password, if any, as ``***``: fit for a log or the results' JSON.

    >>> safe_url("postgresql+psycopg://scorer:s3cret@db:5432/test")
    'postgresql+psycopg://scorer:***@db:5432/test'
    """
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<a URL that does not parse>"


def engine(url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine(url)


def unreachable(url: str) -> str | None:
    """Return why the database at ``url`` cannot be reached, or None."""
    from sqlalchemy import text

    try:
        eng = engine(url)
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return None


def _marker(rows: int) -> str:
    _repo_dags()
    from parallelrun_examples.customers import SEED

    return f"parallelrun benchmark customers rows={rows} seed={SEED}"


def _holds(conn: Any, table: str, rows: int) -> bool:
    """Tell whether ``table`` exists with the comment of ``rows`` rows and exactly that many rows."""
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table(table):
        return False
    comment = conn.execute(text("SELECT obj_description(CAST(:t AS regclass), 'pg_class')"), {"t": table})
    if comment.scalar_one_or_none() != _marker(rows):
        return False
    return conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one() == rows


def ensure_customers(tables: SqlTables, rows: int) -> bool:
    """Make the customers table of ``rows`` rows unless it is there; return True if it was made."""
    _repo_dags()
    from parallelrun_examples.customers import COLUMNS, customer_blocks, customers_table
    from sqlalchemy import MetaData, text

    eng = engine(tables.url)
    try:
        with eng.connect() as conn:
            if _holds(conn, tables.customers, rows):
                return False
        with eng.begin() as conn:
            conn.execute(text(f'DROP TABLE IF EXISTS "{tables.customers}"'))
            metadata = MetaData()
            customers_table(tables.customers, metadata)
            metadata.create_all(conn)
            copy_sql = f'COPY "{tables.customers}" ({", ".join(COLUMNS)}) FROM STDIN (FORMAT csv)'
            cursor = conn.connection.driver_connection.cursor()
            with cursor.copy(copy_sql) as copy:
                for block in customer_blocks(rows):
                    buffer = io.StringIO()
                    block[COLUMNS].to_csv(buffer, index=False, header=False)
                    copy.write(buffer.getvalue())
            conn.execute(text(f"COMMENT ON TABLE \"{tables.customers}\" IS '{_marker(rows)}'"))
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'VACUUM ANALYZE "{tables.customers}"'))
        return True
    finally:
        eng.dispose()


def drop_tables(url: str, names: list[str]) -> None:
    """Drop the tables named, and any table the sink made for them (``<name>_...`` staging tables)."""
    from sqlalchemy import inspect, text

    eng = engine(url)
    try:
        with eng.begin() as conn:
            existing = set(inspect(conn).get_table_names())
            for name in names:
                for table in sorted(t for t in existing if t == name or t.startswith(f"{name}_")):
                    conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
    finally:
        eng.dispose()


def digest_scores(url: str, table: str) -> dict[str, Any]:
    """Return the rows, distinct ids and a SHA-256 of ``customer_id, score`` sorted by id (rounded)."""
    import numpy as np
    import pandas as pd
    from sqlalchemy import inspect, text

    eng = engine(url)
    try:
        with eng.connect() as conn:
            if not inspect(conn).has_table(table):
                return {"rows": 0, "distinct_ids": 0, "sha256": None}
            frame = pd.read_sql(text(f'SELECT customer_id, score FROM "{table}" ORDER BY customer_id'), conn)
    finally:
        eng.dispose()
    sha = hashlib.sha256()
    sha.update(frame["customer_id"].to_numpy(dtype=np.int64).tobytes())
    sha.update(np.round(frame["score"].to_numpy(dtype=np.float64), SCORE_DECIMALS).tobytes())
    return {
        "rows": len(frame),
        "distinct_ids": int(frame["customer_id"].nunique()),
        "sha256": sha.hexdigest() if len(frame) else None,
    }
