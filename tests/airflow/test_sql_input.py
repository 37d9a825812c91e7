"""SqlDataset in real Airflow DAG runs on SQLite, PostgreSQL and MariaDB: every row scored once,
templated queries, and a bad input failing the partition task once, naming the Connection id."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from tests.airflow.conftest import task_instances
from tests.unit.test_sql_snapshot import create_rows, row_count

pytestmark = pytest.mark.airflow

SCRIPT = """
def run(mini_batch):
    scored = mini_batch.assign(score=mini_batch["id"] * 2, rows=len(mini_batch))
    return scored.drop(columns=["at", "amount"], errors="ignore")
"""

DAG = """
from datetime import timedelta
from airflow.sdk import DAG, Param
from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, SqlDataset

PARAMS = {{"k": Param(1, type="integer"), "query": Param("", type="string")}}

with DAG("{dag_id}", schedule=None, params=PARAMS) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=SqlDataset(conn_id="{conn_id}", {source}),
        output_path="{output}",
        config=ParallelRunConfig(
            entry_script="{script}",
            mini_batch_size="7 rows",
            process_count_per_node=1,
            append_row_format="csv",
        ),
        retries=2,
        retry_delay=timedelta(0),
    )
"""


def sql_dag(write_dag, tmp_path: Path, conn_id: str, source: str) -> Any:
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    return write_dag(
        DAG.format(
            dag_id=f"sql_{tmp_path.name}",
            conn_id=conn_id,
            source=source,
            output=tmp_path / "out",
            script=script,
        )
    )


def merged(tmp_path: Path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "out" / "parallel_run_step.csv")


def partition_tries(dag_run: Any) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id="score.partition", map_index=-1)
            .one()
        )
        return ti.try_number


def connected_table(db: Any, monkeypatch: pytest.MonkeyPatch, name: str, rows: int) -> str:
    """Create a table of ``rows`` rows in ``db``, reachable as the Connection ``sql_input_db``."""
    table = db.table(name)
    create_rows(db, table, rows)
    monkeypatch.setenv("AIRFLOW_CONN_SQL_INPUT_DB", db.connection_json())
    return table


@pytest.mark.slow
def test_every_row_of_a_table_is_scored_exactly_once_in_a_dag_run(
    sql_database, write_dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = connected_table(sql_database, monkeypatch, "sql_input_dag", 100)
    dag = sql_dag(write_dag, tmp_path, "sql_input_db", f'table="{table}", key="k"')
    dag_run = dag.test()
    assert str(dag_run.state) == "success", task_instances(dag_run)
    scored = merged(tmp_path)
    assert sorted(scored["id"]) == list(range(1, 101))  # each row once
    assert (scored["score"] == scored["id"] * 2).all()
    assert sorted(scored.groupby("rows").size().index) == [2, 7]  # 14 mini-batches of 7, one of 2
    summary = json.loads((tmp_path / "out" / "_parallelrun" / "summary.json").read_text())
    assert summary["input"] == f"sql conn_id='sql_input_db' table='{table}'"
    assert (summary["succeeded_mini_batches"], summary["succeeded_items"]) == (15, 100)


@pytest.mark.slow
def test_a_templated_query_takes_the_runs_params_and_logical_date(
    sql_database, write_dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = connected_table(sql_database, monkeypatch, "sql_input_templated", 60)
    query = f"SELECT id, '{{{{ ds }}}}' AS day FROM {table} WHERE k = {{{{ params.k }}}}"
    dag = sql_dag(write_dag, tmp_path, "sql_input_db", f'query="{query}"')
    dag_run = dag.test(logical_date=dt.datetime(2026, 3, 4, tzinfo=dt.UTC), run_conf={"k": 2})
    assert str(dag_run.state) == "success", task_instances(dag_run)
    scored = merged(tmp_path)
    assert sorted(scored["id"]) == [i for i in range(1, 61) if i % 10 < 9 and i % 3 == 2]
    assert set(scored["day"]) == {"2026-03-04"}


PASSWORD = "pw-Zq81-secret"


def postgres_connection(port: int | None = None) -> str:
    from tests.databases import POSTGRES_URL

    url = make_url(POSTGRES_URL)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": url.host,
            "port": port or url.port,
            "login": url.username,
            "password": PASSWORD,  # the server trusts this machine: the password is only carried
            "schema": url.database,
        }
    )


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("bad query", 'column "no_such_column" does not exist'),
        ("missing table", "the database has no table 'sql_input_no_such_table'"),
        ("refused connection", "Connection refused"),
        ("not read-only", "is not read-only: it starts with 'UPDATE'"),
    ],
)
def test_a_bad_sql_input_fails_the_partition_once_naming_the_connection_not_its_password(
    write_dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, case: str, says: str
) -> None:
    from tests.databases import open_database

    db = open_database("postgresql", tmp_path)
    table = db.table("sql_input_failing")
    create_rows(db, table, 10)
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SQL_INPUT_PW", postgres_connection(1 if "refused" in case else None))
        source = {
            "bad query": f'query="SELECT no_such_column FROM {table}"',
            "missing table": 'table="sql_input_no_such_table"',
            "refused connection": f'table="{table}"',
            "not read-only": 'query="{{ params.query }}"',
        }[case]
        dag = sql_dag(write_dag, tmp_path, "sql_input_pw", source)
        dag_run = dag.test(run_conf={"query": f"UPDATE {table} SET k = 0"})
        assert task_instances(dag_run)[("score.partition", -1)][0] == "failed"
        assert partition_tries(dag_run) == 1  # retries=2, but the same read would fail the same way
        logs = capfd.readouterr()
        text = logs.out + logs.err
        assert says in text and "conn_id='sql_input_pw'" in text
        assert PASSWORD not in text
        assert row_count(db, table) == 10
        assert all(
            PASSWORD not in p.read_text(errors="replace")
            for p in (tmp_path / "out").rglob("*")
            if p.is_file()
        )
    finally:
        from tests.databases import drop_tables

        drop_tables(db)


def test_a_sql_input_is_taken_at_parse_time_and_its_database_connection_is_no_storages(
    tmp_path: Path,
) -> None:
    from airflow.sdk import DAG

    from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, SqlDataset

    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    with DAG("sql_parse", schedule=None) as dag:
        ParallelRunOperator(
            task_id="score",
            inputs=SqlDataset(conn_id="warehouse", query="SELECT * FROM t WHERE day = '{{ ds }}'"),
            output_path=str(tmp_path / "out"),
            config=ParallelRunConfig(entry_script=str(script), mini_batch_size="100 rows"),
        )
    partition = dag.task_dict["score.partition"]
    assert (partition.input_query, partition.input_table) == ("SELECT * FROM t WHERE day = '{{ ds }}'", None)
    # The run and aggregate tasks read the snapshot under output_path: no storage Connection for it.
    assert dag.task_dict["score.run"].partial_kwargs["input_conn_id"] is None
    assert dag.task_dict["score.aggregate"].input_conn_id is None
