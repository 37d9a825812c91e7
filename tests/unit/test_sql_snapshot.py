"""A SQL input is read once into a snapshot, on real SQLite, PostgreSQL and MariaDB, and split exactly.

Each test runs on the three databases (the ``sql_database`` fixture): the snapshot keeps the
database's types, mini-batches by rows hold exactly N rows but the last, a cleared partition
reuses what the first one read, and what is not a read-only query, or fails in the database,
is refused with a message that names the source and the database's words, never a password.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from airflow_parallelrun import ConfigError, ParallelRunConfig, SqlDataset
from airflow_parallelrun.core import steps
from airflow_parallelrun.core.errors import SqlSourceError
from airflow_parallelrun.core.inputs.reading import read_table_piece
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.manifest import iter_mini_batches

OWNER = {"dag_id": "nightly", "run_id": "scheduled__2026-11-28", "task_id": "score.partition"}


def make_spec(tmp_path: Path, size: str = "1000 rows", name: str = "out") -> RunSpec:
    config = ParallelRunConfig(entry_script="x.py", mini_batch_size=size, process_count_per_node=1)
    return RunSpec(str(tmp_path / name), config.for_dataset(tabular=True), str(tmp_path / "x.py"))


def create_rows(db: Any, table: str, count: int, *, first: int = 1) -> None:
    """Create ``table`` (if needed) and add ``count`` rows, most of them under 3 values of ``k``."""
    import sqlalchemy as sa

    columns = sa.Table(
        table,
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("k", sa.Integer, nullable=False),
        sa.Column("n", sa.Integer),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("at", sa.DateTime),
        sa.Column("name", sa.String(40)),
    )
    rows = [
        {
            "id": i,
            "k": i % 3 if i % 10 < 9 else i,
            "n": None if i % 4 == 0 else i * 2,
            "amount": decimal.Decimal(i) / 4,
            "at": dt.datetime(2026, 1, 1) + dt.timedelta(seconds=i),
            "name": f"customer {i}",
        }
        for i in range(first, first + count)
    ]
    engine = db.engine()
    with engine.begin() as conn:
        columns.create(conn, checkfirst=True)
        conn.execute(columns.insert(), rows)
    engine.dispose()


def row_count(db: Any, table: str) -> int:
    engine = db.engine()
    with engine.connect() as conn:
        count = int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    engine.dispose()
    return count


def header(spec: RunSpec) -> dict[str, Any]:
    return json.loads((Path(spec.output_path) / "_parallelrun" / "manifest.json").read_text())


def ids_per_mini_batch(spec: RunSpec) -> list[list[int]]:
    """Read every mini-batch as a run task would, and return the ids each holds."""
    layout = spec.layout()
    return [read_table_piece(mb.piece)["id"].tolist() for mb in iter_mini_batches(layout)]


def test_the_snapshot_keeps_the_databases_types(sql_database, tmp_path: Path) -> None:
    table = sql_database.table("sql_input_types")
    create_rows(sql_database, table, 10)
    spec = make_spec(tmp_path)
    steps.partition(SqlDataset(url=sql_database.url, table=table), spec)
    snapshot = pq.read_table(header(spec)["snapshot"]["file"])
    assert snapshot.schema.field("id").type == pa.int64()
    assert snapshot.schema.field("n").type == pa.int64()  # nullable, and still an integer
    assert snapshot.schema.field("amount").type == pa.decimal128(10, 2)
    assert snapshot.schema.field("at").type == pa.timestamp("us")
    assert snapshot.schema.field("name").type == pa.string()
    rows = snapshot.to_pylist()
    assert rows[3] == {
        "id": 4,
        "k": 1,
        "n": None,
        "amount": decimal.Decimal("1.00"),
        "at": dt.datetime(2026, 1, 1, 0, 0, 4),
        "name": "customer 4",
    }
    assert [r["id"] for r in rows] == list(range(1, 11))  # in primary key order


def test_a_querys_integers_and_decimals_keep_their_types(sql_database, tmp_path: Path) -> None:
    table = sql_database.table("sql_input_query_types")
    create_rows(sql_database, table, 10)
    spec = make_spec(tmp_path)
    query = f"SELECT id, n, amount FROM {table} WHERE id > 2 ORDER BY id"
    steps.partition(SqlDataset(url=sql_database.url, query=query), spec)
    snapshot = pq.read_table(header(spec)["snapshot"]["file"])
    assert snapshot.schema.field("id").type == pa.int64()
    assert snapshot.schema.field("n").type == pa.int64()
    assert pa.types.is_decimal(snapshot.schema.field("amount").type) or sql_database.kind == "sqlite"
    assert snapshot.column("id").to_pylist() == list(range(3, 11))


def test_mini_batches_by_rows_hold_exactly_n_rows_but_the_last_and_every_row_once(
    sql_database, tmp_path: Path
) -> None:
    table = sql_database.table("sql_input_exact")
    create_rows(sql_database, table, 10_007)
    spec = make_spec(tmp_path, "999 rows")
    # Ordered by the skewed key: nine rows in ten share one of three values.
    steps.partition(SqlDataset(url=sql_database.url, table=table, key="k"), spec)
    batches = ids_per_mini_batch(spec)
    assert [len(b) for b in batches] == [999] * 10 + [17]
    assert sorted(i for b in batches for i in b) == list(range(1, 10_008))
    assert header(spec)["input_rows"] == 10_007


def test_a_cleared_partition_sees_what_the_first_try_saw_and_a_new_run_reads_fresh(
    sql_database, tmp_path: Path
) -> None:
    table = sql_database.table("sql_input_cleared")
    create_rows(sql_database, table, 2500)
    dataset = SqlDataset(url=sql_database.url, table=table)
    spec = make_spec(tmp_path)
    steps.partition(dataset, spec, owner=OWNER)
    first = header(spec)
    create_rows(sql_database, table, 700, first=10_001)  # inserted while the run goes on

    steps.partition(dataset, spec, owner=OWNER)  # the same DAG run's partition task, cleared
    again = header(spec)
    assert again["snapshot"] == {**first["snapshot"], "reused": True}
    assert sorted(i for b in ids_per_mini_batch(spec) for i in b) == list(range(1, 2501))
    assert again["fingerprint"] == first["fingerprint"]

    steps.partition(dataset, spec, resume=True, owner={**OWNER, "run_id": "manual__resume"})
    assert header(spec)["snapshot"]["reused"] and header(spec)["resumed"]

    steps.partition(dataset, spec, owner={**OWNER, "run_id": "scheduled__2026-11-29"})  # the next night
    fresh = header(spec)
    assert not fresh["snapshot"]["reused"] and fresh["input_rows"] == 3200
    assert fresh["fingerprint"] != first["fingerprint"]
    assert [p.name for p in (tmp_path / "out" / "_parallelrun" / "input").glob("*.parquet")] == [
        Path(fresh["snapshot"]["file"]).name
    ]


@pytest.mark.parametrize(
    "query",
    ["UPDATE {t} SET k = 0", "DROP TABLE {t}", "SELECT 1; DROP TABLE {t}", "DELETE FROM {t}"],
)
def test_a_rendered_query_that_is_not_read_only_is_refused_before_anything_runs(
    sql_database, tmp_path: Path, query: str
) -> None:
    table = sql_database.table("sql_input_refused")
    create_rows(sql_database, table, 20)
    templated = SqlDataset(url=sql_database.url, query="{{ params.query }}")
    with pytest.raises(ConfigError, match="is not read-only"):
        templated.rendered(None, query.format(t=table))
    with pytest.raises(ConfigError, match="is not read-only"):
        SqlDataset(url=sql_database.url, query=query.format(t=table))
    assert row_count(sql_database, table) == 20


def test_a_data_modifying_cte_fails_in_the_read_only_transaction(sql_database, tmp_path: Path) -> None:
    if sql_database.kind != "postgresql":
        pytest.skip("only PostgreSQL has data-modifying CTEs (WITH d AS (DELETE ... RETURNING *))")
    table = sql_database.table("sql_input_cte")
    create_rows(sql_database, table, 20)
    query = f"WITH gone AS (DELETE FROM {table} RETURNING id) SELECT id FROM gone"
    # The server-side cursor refuses it first; the read-only transaction would, too (next test).
    with pytest.raises(SqlSourceError, match="must not contain data-modifying statements"):
        steps.partition(SqlDataset(url=sql_database.url, query=query), make_spec(tmp_path))
    assert row_count(sql_database, table) == 20


WRITE_REFUSED = {
    "sqlite": "attempt to write a readonly database",
    "postgresql": "cannot execute INSERT in a read-only transaction",
    "mariadb": "Cannot execute statement in a READ ONLY transaction",
}


ISOLATION = {"postgresql": "SHOW transaction_isolation", "mariadb": "SELECT @@tx_isolation"}


def test_the_snapshot_transaction_refuses_every_write(sql_database) -> None:
    from sqlalchemy.exc import DBAPIError

    from airflow_parallelrun.core.sql.engine import database_message, make_engine
    from airflow_parallelrun.core.sql.transaction import read_only_snapshot

    table = sql_database.table("sql_input_read_only")
    create_rows(sql_database, table, 20)
    engine = make_engine(sql_database.url)
    with read_only_snapshot(engine) as conn:
        assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() == 20
        if sql_database.kind in ISOLATION:
            assert str(conn.execute(text(ISOLATION[sql_database.kind])).scalar_one()).upper() in (
                "REPEATABLE READ",
                "REPEATABLE-READ",
            )
        with pytest.raises(DBAPIError) as info:
            conn.execute(text(f"INSERT INTO {table} (id, k) VALUES (0, 0)"))
    engine.dispose()
    assert WRITE_REFUSED[sql_database.kind] in database_message(info.value)
    assert row_count(sql_database, table) == 20


MISSING = {
    "sqlite": "no such table",
    "postgresql": "does not exist",
    "mariadb": "doesn't exist",
}


def test_a_bad_query_or_a_missing_table_names_the_source_and_the_databases_message(
    sql_database, tmp_path: Path
) -> None:
    table = sql_database.table("sql_input_errors")
    create_rows(sql_database, table, 5)
    url, missing = sql_database.url, "sql_input_no_such_table"
    cases = [
        (SqlDataset(url=url, query=f"SELECT no_such_column FROM {table}"), "no_such_column"),
        (SqlDataset(url=url, query=f"SELECT * FROM {missing}"), MISSING[sql_database.kind]),
        (SqlDataset(url=url, table=missing), f"has no table {missing!r}"),
        (SqlDataset(url=url, table=table, columns=["id", "nope"]), "does not have; its columns are"),
    ]
    for number, (dataset, says) in enumerate(cases):
        spec = make_spec(tmp_path, name=f"out{number}")
        with pytest.raises((SqlSourceError, ConfigError)) as info:
            steps.partition(dataset, spec)
        assert dataset.describe() in str(info.value) or "nope" in str(info.value)
        assert says in str(info.value)
        summary = json.loads((Path(spec.output_path) / "_parallelrun" / "summary.json").read_text())
        assert summary["status"] == "failed" and says in summary["error"]


def test_a_refused_connection_names_the_source_and_never_the_password(sql_database, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    if sql_database.kind == "sqlite":
        url = f"sqlite:///{tmp_path}/no/such/folder/test.db"
        says = "unable to open database file"
    else:
        url = make_url(sql_database.url).set(port=1, password="pw-Zq81").render_as_string(hide_password=False)
        says = "Connection refused"
    dataset = SqlDataset(url=url, table="customers")
    spec = make_spec(tmp_path)
    with pytest.raises(SqlSourceError) as info:
        steps.partition(dataset, spec)
    message = str(info.value)
    assert says in message and dataset.describe() in message
    assert "pw-Zq81" not in message
    for path in (tmp_path / "out").rglob("*"):
        assert path.is_dir() or "pw-Zq81" not in path.read_text(errors="replace")


@pytest.mark.slow
def test_mini_batches_by_bytes_pack_whole_row_groups_and_hold_every_row_once(
    sql_database, tmp_path: Path
) -> None:
    table = sql_database.table("sql_input_bytes")
    create_rows(sql_database, table, 25_000)
    spec = make_spec(tmp_path, "1KB")  # smaller than one row group: one row group each
    steps.partition(SqlDataset(url=sql_database.url, table=table), spec)
    batches = ids_per_mini_batch(spec)
    assert [len(b) for b in batches] == [10_000, 10_000, 5_000]
    assert sorted(i for b in batches for i in b) == list(range(1, 25_001))


def test_a_query_with_no_rows_makes_a_run_of_zero_mini_batches_that_succeeds(
    sql_database, tmp_path: Path
) -> None:
    table = sql_database.table("sql_input_empty")
    create_rows(sql_database, table, 3)
    spec = make_spec(tmp_path)
    query = f"SELECT id, n FROM {table} WHERE id > 100"
    assert steps.partition(SqlDataset(url=sql_database.url, query=query), spec) == []
    assert "returned no rows" in header(spec)["note"]
    summary = steps.aggregate(spec)
    assert (summary["status"], summary["total_items"]) == ("succeeded", 0)
