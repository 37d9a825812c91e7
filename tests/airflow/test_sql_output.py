"""``ParallelRunOperator(output=SqlTable(conn_id=...))`` in real DAG runs, on SQLite, PostgreSQL and MariaDB.

The Connection is an ``AIRFLOW_CONN_<ID>`` variable, as users define one; the run and aggregate
tasks read it themselves, so its URL never reaches XCom, the manifest or the summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sql.sink import DONE_SUFFIX, MERGES_SUFFIX, STAGING_SUFFIX, SqlTable
from tests.airflow.airflow_versions import dag_serialization
from tests.airflow.conftest import task_instances

pytestmark = [pytest.mark.airflow]

SCRIPT = """
import pandas as pd

def run(df):
    return [{"id": int(i), "score": float(x) * 2, "note": None if i % 3 else "third"}
            for i, x in zip(df["id"], df["x"])]
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, SqlTable, TabularDataset

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=TabularDataset(path="{input}", format="csv"),
        output_path="{output}/{{{{ run_id }}}}",
        output=SqlTable(conn_id="{conn_id}", table="{table}", key={key!r}, if_exists="{if_exists}"),
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="3 rows", process_count_per_node=2,
                                 output_action="{output_action}"),
    )
"""


def _input(folder: Path, values: dict[int, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.csv").write_text("id,x\n" + "".join(f"{i},{x}\n" for i, x in values.items()))


def _run(
    write_dag, tmp_path: Path, db: Any, monkeypatch, table: str, values: dict[int, float], **options: Any
):
    monkeypatch.setenv("AIRFLOW_CONN_SQLOUT_DB", db.connection_json())
    _input(tmp_path / "in", values)
    (tmp_path / "score.py").write_text(SCRIPT)
    settings = {"key": None, "if_exists": "append", "output_action": "append_row"} | options
    source = DAG_SOURCE.format(
        dag_id=f"sqlout_{table}",
        input=tmp_path / "in",
        output=tmp_path / "out",
        script=tmp_path / "score.py",
        conn_id="sqlout_db",
        table=table,
        **settings,
    )
    dag_run = write_dag(source).test()
    return dag_run


def _table(db: Any, name: str) -> list[tuple[Any, ...]]:
    engine = db.engine()
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(sa.text(f"SELECT id, score, note FROM {name} ORDER BY id"))]
    engine.dispose()
    return found


def _register(db: Any, prefix: str) -> str:
    table = db.table(prefix)
    db.created.extend(table + s for s in (STAGING_SUFFIX, DONE_SUFFIX, MERGES_SUFFIX))
    return table


def _logged(capsys, caplog) -> str:
    """Return what the tasks logged: ``dag.test()`` prints task logs to stdout."""
    captured = capsys.readouterr()
    return captured.out + captured.err + caplog.text


def _summary(tmp_path: Path, dag_run: Any) -> dict[str, Any]:
    return json.loads((tmp_path / "out" / dag_run.run_id / "_parallelrun" / "summary.json").read_text())


@pytest.mark.slow
def test_upsert_in_dag_runs_updates_rather_than_duplicates(write_dag, tmp_path, sql_database, monkeypatch):
    table = _register(sql_database, "dag_upsert")
    first = _run(
        write_dag,
        tmp_path,
        sql_database,
        monkeypatch,
        table,
        {i: i for i in range(8)},
        key=["id"],
        if_exists="upsert",
    )
    assert first.state == "success"
    assert len(_table(sql_database, table)) == 8
    second = _run(
        write_dag,
        tmp_path,
        sql_database,
        monkeypatch,
        table,
        {i: 100 + i for i in range(4, 10)},
        key=["id"],
        if_exists="upsert",
    )
    assert second.state == "success"
    assert _table(sql_database, table) == [
        (i, 2.0 * (i if i < 4 else 100 + i), None if i % 3 else "third") for i in range(10)
    ]
    summary = _summary(tmp_path, second)
    assert summary["sql_output"] == {
        "table": table,
        "database": "Connection 'sqlout_db'",
        "if_exists": "upsert",
        "rows_written": 6,
        "rows_written_by_this_try": 6,
        "note": "",
    }
    # The merged file is written alongside, in its own format.
    assert len((tmp_path / "out" / second.run_id / "parallel_run_step.txt").read_text().splitlines()) == 6


@pytest.mark.slow
def test_append_then_replace_in_dag_runs(write_dag, tmp_path, sql_database, monkeypatch):
    table = _register(sql_database, "dag_replace")
    for _ in range(2):
        assert (
            _run(write_dag, tmp_path, sql_database, monkeypatch, table, {i: i for i in range(5)}).state
            == "success"
        )
    assert [r[0] for r in _table(sql_database, table)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    replaced = _run(
        write_dag,
        tmp_path,
        sql_database,
        monkeypatch,
        table,
        {7: 1.5, 8: 2.5},
        if_exists="replace",
        output_action="summary_only",
    )
    assert replaced.state == "success"
    assert _table(sql_database, table) == [(7, 3.0, None), (8, 5.0, None)]
    assert not (tmp_path / "out" / replaced.run_id / "parallel_run_step.txt").exists()


def _failing_run(write_dag, tmp_path: Path, conn_id: str) -> Any:
    """Run one mini-batch into a table of the Connection ``conn_id``; return the DAG run."""
    _input(tmp_path / "in", {1: 1.0})
    (tmp_path / "score.py").write_text(SCRIPT)
    source = DAG_SOURCE.format(
        dag_id=f"sqlout_{conn_id}",
        input=tmp_path / "in",
        output=tmp_path / "out",
        script=tmp_path / "score.py",
        conn_id=conn_id,
        table="scores",
        key=None,
        if_exists="append",
        output_action="append_row",
    )
    return write_dag(source).test()


def test_a_missing_connection_fails_the_run_tasks_naming_it(write_dag, tmp_path, capsys, caplog):
    dag_run = _failing_run(write_dag, tmp_path, "no_such_db")
    assert dag_run.state == "failed"
    assert task_instances(dag_run)[("score.run", 0)][0] == "failed"
    assert "the SqlTable's Connection 'no_such_db' cannot be read" in _logged(capsys, caplog)


@pytest.mark.slow
def test_a_database_error_names_the_connection_and_never_its_password(
    write_dag, tmp_path, monkeypatch, capsys, caplog
) -> None:
    # A PostgreSQL Connection with a password, to a port where no server listens.
    down = {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "scorer", "schema": "test"}
    monkeypatch.setenv("AIRFLOW_CONN_SQLOUT_DOWN", json.dumps(down | {"password": "pw-Zq81secret"}))
    dag_run = _failing_run(write_dag, tmp_path, "sqlout_down")
    assert dag_run.state == "failed"
    logged = _logged(capsys, caplog)
    assert "in Connection 'sqlout_down' failed:" in logged and "connection" in logged.lower()
    assert "pw-Zq81secret" not in logged
    out = tmp_path / "out" / dag_run.run_id
    stored = "".join(
        p.read_text() for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".csv")
    )
    assert stored and "pw-Zq81secret" not in stored
    # The aggregate, within the default error_threshold, tried to merge and says why it could not.
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert "in Connection 'sqlout_down' failed" in summary["error"]


def test_resume_with_a_table_output_that_replaces_is_refused_when_the_dag_is_parsed(tmp_path) -> None:
    from airflow.sdk import DAG

    from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

    (tmp_path / "s.py").write_text(SCRIPT)
    arguments: dict[str, Any] = {
        "inputs": TabularDataset(path=str(tmp_path), format="csv"),
        "output_path": str(tmp_path),
        "config": ParallelRunConfig(entry_script=str(tmp_path / "s.py")),
        "resume": True,
    }
    with (
        DAG("sqlout_resume_replace", schedule=None),
        pytest.raises(ConfigError, match=r"resume=True .*replace"),
    ):
        ParallelRunOperator(
            task_id="score",
            output=SqlTable(url="sqlite:///scores.db", table="s", if_exists="replace"),
            **arguments,
        )
    with DAG("sqlout_resume_upsert", schedule=None):
        ParallelRunOperator(
            task_id="score",
            output=SqlTable(url="sqlite:///scores.db", table="s", key=["id"], if_exists="upsert"),
            **arguments,
        )


def test_an_output_that_is_not_a_sql_table_is_refused_when_the_dag_is_parsed(tmp_path) -> None:
    from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

    (tmp_path / "s.py").write_text(SCRIPT)
    with pytest.raises(ConfigError, match=r"output='scores' is not a SqlTable"):
        ParallelRunOperator(
            task_id="x",
            inputs=TabularDataset(path=str(tmp_path), format="csv"),
            output_path=str(tmp_path),
            config=ParallelRunConfig(entry_script=str(tmp_path / "s.py")),
            output="scores",
        )
    assert SqlTable(conn_id="db", table="t").conn_id == "db"


def test_a_url_given_in_the_dag_file_never_reaches_the_serialized_dag(tmp_path) -> None:
    from airflow.sdk import DAG

    from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

    (tmp_path / "s.py").write_text(SCRIPT)
    with DAG("sqlout_serialized", schedule=None) as dag:
        ParallelRunOperator(
            task_id="score",
            inputs=TabularDataset(path=str(tmp_path), format="csv"),
            output_path=str(tmp_path),
            output=SqlTable(url="postgresql+psycopg://scorer:pw-Zq81secret@db/dw", table="scores"),
            config=ParallelRunConfig(entry_script=str(tmp_path / "s.py")),
        )
    text = json.dumps(dag_serialization().to_dict(dag), default=str)
    assert "SqlTable(url=<hidden>, table='scores'" in text
    assert "pw-Zq81secret" not in text
