"""The SQL sink through the core steps on real databases (SQLite, PostgreSQL, MariaDB).

Each test partitions a small csv table, runs its mini-batches through real worker processes and
aggregates, as the three tasks of a DAG run do, with ``SqlTable`` as the output.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import AggregateError, ConfigError, SqlOutputError
from airflow_parallelrun.core.inputs.datasets import TabularDataset
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.sql.sink import DONE_SUFFIX, MERGES_SUFFIX, STAGING_SUFFIX, SqlTable, bind_sink
from airflow_parallelrun.core.sql.staging import stage_part

# Scores each row: score = x * FACTOR; a label only for odd ids (a nullable string column).
SCRIPT = """
import os
import pandas as pd

def run(df):
    out = pd.DataFrame({"id": df["id"], "score": df["x"] * float(os.environ.get("FACTOR", "2"))})
    out["label"] = [f"odd{i}" if i % 2 else None for i in df["id"]]
    out["scored_at"] = pd.Timestamp("2026-01-02 03:04:05", tz="UTC")
    return out
"""


def sink_tables(db: Any, name: str) -> str:
    """Register the sink's bookkeeping tables with the fixture, which drops them after the test."""
    db.created.extend(name + suffix for suffix in (STAGING_SUFFIX, DONE_SUFFIX, MERGES_SUFFIX))
    return name


def write_input(folder: Path, ids: range) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.csv").write_text("id,x\n" + "".join(f"{i},{i}.5\n" for i in ids))


def score(
    db: Any,
    tmp_path: Path,
    table: str,
    *,
    ids: range = range(10),
    script: str = SCRIPT,
    factor: float = 2,
    **config: Any,
) -> dict[str, Any]:
    """Run one whole run (partition, every mini-batch, aggregate) into ``table``; return the summary."""
    run = tmp_path / uuid.uuid4().hex[:8]
    write_input(run / "in", ids)
    (run / "score.py").write_text(textwrap.dedent(script))
    output = config.pop("output", None) or SqlTable(url=db.url, table=table)
    settings: dict[str, Any] = {"mini_batch_size": "4 rows", "warm_workers": False, "run_max_try": 1}
    spec = RunSpec(
        output_path=str(run / "out"),
        config=ParallelRunConfig(
            entry_script="score.py", environment_variables={"FACTOR": str(factor)}, **settings | config
        ),
        entry_script=str(run / "score.py"),
        sink=bind_sink(output),
    )
    descriptors = steps.partition(TabularDataset(path=str(run / "in"), format="csv"), spec)
    steps.run_mini_batches(range(len(descriptors)), spec)
    summary = steps.aggregate(spec)
    summary["_out"] = run / "out"
    return summary


def rows(db: Any, table: str) -> list[tuple[Any, ...]]:
    engine = db.engine()
    with engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT id, score, label FROM {table} ORDER BY id")).fetchall()
    engine.dispose()
    return [tuple(r) for r in found]


def expected(ids: range, factor: float = 2) -> list[tuple[Any, ...]]:
    return [(i, (i + 0.5) * factor, f"odd{i}" if i % 2 else None) for i in ids]


@pytest.mark.slow
def test_append_creates_the_table_and_a_second_run_appends(sql_database, tmp_path: Path) -> None:
    table = sink_tables(sql_database, sql_database.table("scores"))
    summary = score(sql_database, tmp_path, table)
    assert rows(sql_database, table) == expected(range(10))
    assert summary["sql_output"]["rows_written"] == 10
    assert summary["sql_output"]["table"] == table
    score(sql_database, tmp_path, table, ids=range(10, 13))
    assert rows(sql_database, table) == expected(range(13))
    # The run's staged rows and done records are gone; one merge record per run stays.
    engine = sql_database.engine()
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}{STAGING_SUFFIX}")).scalar() == 0
        assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}{DONE_SUFFIX}")).scalar() == 0
        assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}{MERGES_SUFFIX}")).scalar() == 2
    engine.dispose()


def test_the_created_table_takes_the_returned_columns_types(sql_database, tmp_path: Path) -> None:
    table = sink_tables(sql_database, sql_database.table("typed"))
    score(sql_database, tmp_path, table, output=SqlTable(url=sql_database.url, table=table, key="id"))
    engine = sql_database.engine()
    inspector = sa.inspect(engine)
    columns = {c["name"]: c for c in inspector.get_columns(table)}
    engine.dispose()
    assert list(columns) == ["id", "score", "label", "scored_at"]
    assert isinstance(columns["id"]["type"], sa.Integer) and not columns["id"]["nullable"]
    assert isinstance(columns["score"]["type"], sa.Float)
    assert isinstance(columns["label"]["type"], sa.String) and columns["label"]["nullable"]
    assert isinstance(columns["scored_at"]["type"], sa.DateTime)
    assert rows(sql_database, table)[1] == (1, 3.0, "odd1")
    assert rows(sql_database, table)[0] == (0, 1.0, None)


@pytest.mark.slow
def test_upsert_a_second_run_over_the_same_keys_updates_rather_than_duplicates(
    sql_database, tmp_path: Path
) -> None:
    table = sink_tables(sql_database, sql_database.table("upserted"))
    output = SqlTable(url=sql_database.url, table=table, key=["id"], if_exists="upsert")
    score(sql_database, tmp_path, table, output=output)
    summary = score(sql_database, tmp_path, table, output=output, ids=range(5, 15), factor=10)
    assert rows(sql_database, table) == expected(range(5)) + expected(range(5, 15), factor=10)
    assert summary["sql_output"]["if_exists"] == "upsert"


@pytest.mark.slow
def test_replace_swaps_the_tables_rows_and_keeps_the_table(sql_database, tmp_path: Path) -> None:
    table = sink_tables(sql_database, sql_database.table("replaced"))
    engine = sql_database.engine()
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id BIGINT, score FLOAT, label VARCHAR(20), other INT)"))
        conn.execute(sa.text(f"INSERT INTO {table} (id, score, label, other) VALUES (99, 1, 'old', 7)"))
    engine.dispose()
    output = SqlTable(url=sql_database.url, table=table, if_exists="replace")
    score(sql_database, tmp_path, table, output=output, script=SCRIPT.replace('out["scored_at"]', "_"))
    assert rows(sql_database, table) == expected(range(10))
    score(
        sql_database,
        tmp_path,
        table,
        output=output,
        ids=range(3),
        script=SCRIPT.replace('out["scored_at"]', "_"),
    )
    assert rows(sql_database, table) == expected(range(3))


@pytest.mark.slow
def test_upsert_into_a_table_without_a_unique_key_is_refused_saying_how_to_add_one(
    sql_database, tmp_path: Path
) -> None:
    table = sink_tables(sql_database, sql_database.table("nokey"))
    engine = sql_database.engine()
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"CREATE TABLE {table} (id BIGINT, score FLOAT, label TEXT, scored_at TIMESTAMP)")
        )
    engine.dispose()
    output = SqlTable(url=sql_database.url, table=table, key=["id"], if_exists="upsert")
    with pytest.raises(
        AggregateError, match=r"no primary key or unique index on \['id'\].*CREATE UNIQUE INDEX"
    ):
        score(sql_database, tmp_path, table, output=output)
    assert rows(sql_database, table) == []


@pytest.mark.slow
def test_a_mini_batch_run_again_after_its_rows_were_staged_leaves_them_once(
    sql_database, tmp_path: Path
) -> None:
    # As a task killed between the staging commit and its status: the mini-batch runs again.
    table = sink_tables(sql_database, sql_database.table("again"))
    run = tmp_path / "run"
    write_input(run / "in", range(10))
    (run / "score.py").write_text(SCRIPT)
    spec = RunSpec(
        output_path=str(run / "out"),
        config=ParallelRunConfig(entry_script="score.py", mini_batch_size="4 rows", warm_workers=False),
        entry_script=str(run / "score.py"),
        sink=bind_sink(SqlTable(url=sql_database.url, table=table)),
    )
    steps.partition(TabularDataset(path=str(run / "in"), format="csv"), spec)
    steps.run_mini_batches([0, 1, 2], spec)
    (run / "out" / "_parallelrun" / "status" / "mb-000001.json").unlink()
    steps.run_mini_batches([1], spec)
    steps.aggregate(spec)
    steps.aggregate(spec)  # a retried aggregate finds the merge record
    assert rows(sql_database, table) == expected(range(10))


@pytest.mark.slow
def test_summary_only_writes_the_table_instead_of_the_merged_file(sql_database, tmp_path: Path) -> None:
    table = sink_tables(sql_database, sql_database.table("only"))
    summary = score(sql_database, tmp_path, table, output_action="summary_only")
    assert rows(sql_database, table) == expected(range(10))
    assert summary["output"] is None
    assert not list(summary["_out"].glob("parallel_run_step.*"))
    assert not list((summary["_out"] / "_parallelrun").glob("parts/*"))


@pytest.mark.slow
def test_the_merged_file_keeps_its_format_alongside_the_table(sql_database, tmp_path: Path) -> None:
    table = sink_tables(sql_database, sql_database.table("both"))
    summary = score(sql_database, tmp_path, table, append_row_format="csv")
    lines = (summary["_out"] / "parallel_run_step.csv").read_text().splitlines()
    assert lines[0] == "id,score,label,scored_at" and len(lines) == 11
    assert rows(sql_database, table) == expected(range(10))


@pytest.mark.slow
@pytest.mark.parametrize("warm_workers", [True, False])
def test_warm_workers_on_and_off_stage_the_same_rows(sql_database, tmp_path: Path, warm_workers) -> None:
    table = sink_tables(sql_database, sql_database.table("warm"))
    score(sql_database, tmp_path, table, warm_workers=warm_workers, process_count_per_node=1)
    assert rows(sql_database, table) == expected(range(10))


def test_a_plain_list_of_strings_fails_each_mini_batch_saying_to_return_rows(
    sql_database, tmp_path: Path
) -> None:
    table = sink_tables(sql_database, sql_database.table("strings"))
    script = "def run(df):\n    return [f'{i}: ok' for i in df['id']]\n"
    summary = score(sql_database, tmp_path, table, script=script, error_threshold=-1)
    errors = summary["first_errors"]
    assert summary["failed_mini_batches"] == 3 and {e["category"] for e in errors} == {"run_output"}
    assert "return a pandas DataFrame or a list of dicts" in errors[0]["message"]
    assert "'0: ok'" in errors[0]["message"]
    assert summary["sql_output"]["rows_written"] == 0


@pytest.mark.slow
def test_a_failed_run_writes_nothing_into_the_table(sql_database, tmp_path: Path) -> None:
    table = sink_tables(sql_database, sql_database.table("failed"))
    script = SCRIPT.replace(
        "def run(df):", "def run(df):\n    if 5 in set(df['id']):\n        raise ValueError('no')"
    )
    with pytest.raises(Exception, match="error_threshold"):
        score(sql_database, tmp_path, table, script=script, error_threshold=0)
    engine = sql_database.engine()
    assert not sa.inspect(engine).has_table(table)
    engine.dispose()


def test_a_database_error_names_the_database_and_its_message_never_the_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://scorer:pw-Zq81@127.0.0.1:1/test"
    sink = bind_sink(SqlTable(url=url, table="scores"))
    pq.write_table(pa.table({"id": [1]}), tmp_path / "p.parquet")
    with pytest.raises(SqlOutputError) as caught:
        stage_part(sink, "k", "mb-000000", str(tmp_path / "p.parquet"))
    message = str(caught.value)
    assert "pw-Zq81" not in message and "scorer:***@127.0.0.1:1/test" in message
    assert "mb-000000" in message and "scores__parallelrun_staging" in message
    assert "connection" in message.lower()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"url": "sqlite://", "table": "t", "if_exists": "upsert"}, "needs key="),
        ({"table": "t"}, "exactly one of conn_id and url"),
        ({"url": "sqlite://", "conn_id": "db", "table": "t"}, "exactly one of conn_id and url"),
        ({"url": "sqlite://", "table": "t; DROP TABLE x"}, "not a plain identifier"),
        ({"url": "sqlite://", "table": "x" * 50}, "at most 42 characters"),
        ({"url": "sqlite://", "table": "t", "schema": "a.b"}, "schema='a.b'"),
        ({"url": "sqlite://", "table": "t", "if_exists": "merge"}, "append, replace, upsert"),
        ({"url": "sqlite://", "table": "t", "key": ["id", "bad col"]}, "key='bad col'"),
    ],
)
def test_bad_sql_table_arguments_are_refused_at_once(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match="SqlTable") as caught:
        SqlTable(**kwargs)
    assert words in str(caught.value)


def test_the_repr_hides_the_url() -> None:
    assert "pw" not in repr(SqlTable(url="postgresql://u:pw@h/db", table="t"))


@pytest.mark.slow
@pytest.mark.parametrize("if_exists", ["append", "replace"])
def test_a_failed_mini_batch_run_again_after_the_run_merged_completes_the_table_once(
    sql_database, tmp_path: Path, if_exists: str
) -> None:
    # As clearing a failed run task and then the aggregate of a run that succeeded within its bounds.
    table = sink_tables(sql_database, sql_database.table(f"clear_{if_exists}"))
    flag = tmp_path / "fail-5"
    flag.touch()
    script = SCRIPT.replace(
        "def run(df):",
        f"def run(df):\n    if 5 in set(df['id']) and os.path.exists({str(flag)!r}):\n"
        "        raise ValueError",
    )
    run = tmp_path / "run"
    write_input(run / "in", range(10))
    (run / "score.py").write_text(script)
    spec = RunSpec(
        output_path=str(run / "out"),
        config=ParallelRunConfig(
            entry_script="score.py",
            mini_batch_size="4 rows",
            warm_workers=False,
            error_threshold=-1,
            run_max_try=1,
        ),
        entry_script=str(run / "score.py"),
        sink=bind_sink(SqlTable(url=sql_database.url, table=table, if_exists=if_exists)),
    )
    steps.partition(TabularDataset(path=str(run / "in"), format="csv"), spec)
    steps.run_mini_batches([0, 1, 2], spec)
    first = steps.aggregate(spec)
    assert first["sql_output"]["rows_written"] == 6
    assert rows(sql_database, table) == expected(range(4)) + expected(range(8, 10))
    flag.unlink()
    steps.run_mini_batches([0, 1, 2], spec)  # the succeeded ones are reused, mini-batch 1 runs again
    second = steps.aggregate(spec)
    steps.aggregate(spec)
    assert rows(sql_database, table) == expected(range(10))
    assert (second["sql_output"]["rows_written"], second["sql_output"]["rows_written_by_this_try"]) == (10, 4)


def test_a_mini_batch_returning_other_columns_fails_alone_saying_which(sql_database, tmp_path: Path) -> None:
    table = sink_tables(sql_database, sql_database.table("columns"))
    script = SCRIPT.replace(
        "    return out", "    if 5 in set(df['id']):\n        out['extra'] = 1\n    return out"
    )
    summary = score(sql_database, tmp_path, table, script=script, error_threshold=-1)
    assert (summary["succeeded_mini_batches"], summary["failed_mini_batches"]) == (2, 1)
    error = summary["first_errors"][0]
    assert error["category"] == "run_output" and "run() returned columns ['extra']" in error["message"]
    assert rows(sql_database, table) == expected(range(4)) + expected(range(8, 10))


def test_staged_rows_keep_every_value_as_an_insert_of_them_does(sql_database, tmp_path: Path) -> None:
    # On PostgreSQL the rows go by COPY: they must read back as the same rows INSERTed do (NULLs,
    # zones, decimals, booleans, bytes, and strings with tabs, newlines, backslashes and \N).
    from datetime import UTC, date, datetime
    from decimal import Decimal

    name = sink_tables(sql_database, sql_database.table("types"))
    sql_database.created.append(name + "_twin")
    part = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "score": [0.1, None, float("1e300")],
            "price": pa.array([Decimal("12.34"), None, Decimal("-0.01")], pa.decimal128(10, 2)),
            "flag": [True, False, None],
            "at": pa.array(
                [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None, datetime(1999, 12, 31, tzinfo=UTC)]
            ),
            "day": [date(2026, 1, 2), None, date(2000, 2, 29)],
            "label": ["a\tb\nc\\d", None, "\\N"],
            "blob": [b"\x00\x01\\", None, b""],
        }
    )
    pq.write_table(part, tmp_path / "p.parquet")
    sink = bind_sink(SqlTable(url=sql_database.url, table=name))
    assert stage_part(sink, "k", "mb-000000", str(tmp_path / "p.parquet")) == 3
    engine = sql_database.engine()
    staged = sa.Table(name + STAGING_SUFFIX, sa.MetaData(), autoload_with=engine)
    twin = sa.Table(name + "_twin", sa.MetaData(), *[c.copy() for c in staged.c])
    twin.create(engine)
    with engine.begin() as conn:
        conn.execute(
            twin.insert(),
            [
                {**r, "parallelrun_run_key": "k", "parallelrun_mini_batch": "mb-000000"}
                for r in part.to_pylist()
            ],
        )
    with engine.connect() as conn:
        got, want = (conn.execute(sa.select(t).order_by(t.c.id)).fetchall() for t in (staged, twin))
    engine.dispose()
    assert [tuple(r) for r in got] == [tuple(r) for r in want]
    assert got[1][2:] == (2, None, None, False, None, None, None, None)
    assert got[0][-2:] == ("a\tb\nc\\d", b"\x00\x01\\") and got[2][-2] == "\\N"


def test_postgresql_stages_by_copy_and_the_others_by_insert(sql_database, tmp_path: Path) -> None:
    from airflow_parallelrun.core.sql.staging import engine_of

    name = sink_tables(sql_database, sql_database.table("copied"))
    pq.write_table(pa.table({"id": list(range(5)), "score": [0.5] * 5}), tmp_path / "p.parquet")
    sink = bind_sink(SqlTable(url=sql_database.url, table=name))
    statements: list[str] = []
    sa.event.listen(engine_of(sink), "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert stage_part(sink, "k", "mb-000000", str(tmp_path / "p.parquet")) == 5
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT") and STAGING_SUFFIX in s]
    assert len(inserts) == (0 if sql_database.kind == "postgresql" else 1)
    engine = sql_database.engine()
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}{STAGING_SUFFIX}")).scalar_one() == 5
    engine.dispose()
