"""A SQL output under a real scheduler and a real PostgreSQL: tasks SIGKILLed mid-write, every row once.

Each kill is real: a task process reaching an armed failpoint (``core/failpoints.py``) stops and
writes its process id; the test SIGKILLs it and Airflow retries the task. The points: inside a
mini-batch's staging transaction (before its commit), between that commit and the mini-batch's
status, and inside the aggregate's merge transaction. PostgreSQL rolls back what a killed
connection left uncommitted; the staging and merge design makes what was committed count once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_parallelrun.core.sql.sink import DONE_SUFFIX, MERGES_SUFFIX, STAGING_SUFFIX
from tests.airflow.real_airflow import RealAirflow, running_airflow, trigger_and_kill
from tests.databases import open_database

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1200)]

SCRIPT = """
def run(df):
    return [{"id": int(i), "score": float(x) * 2} for i, x in zip(df["id"], df["x"])]
"""

DAG = """
from datetime import timedelta
from airflow.sdk import DAG
from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, SqlTable, TabularDataset

retry_fast = {{"retries": 2, "retry_delay": timedelta(seconds=1)}}
with DAG("{dag_id}", schedule=None, default_args=retry_fast) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=TabularDataset(path="{input}", format="csv"),
        output_path="{output}/{{{{ run_id }}}}",
        output=SqlTable(conn_id="sqlout_pg", table="{table}", if_exists="{if_exists}", key={key!r}),
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2 rows", run_max_try=1,
                                 error_threshold=0, process_count_per_node=2),
    )
"""

ROWS = 12


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return open_database("postgresql", tmp_path_factory.mktemp("pg"))


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, postgres: Any) -> Iterator[RealAirflow]:
    home = tmp_path_factory.mktemp("sql-recovery-airflow")
    env = {
        "PARALLELRUN_FAILPOINTS": str(home / "failpoints.json"),
        "AIRFLOW_CONN_SQLOUT_PG": postgres.connection_json(),
    }
    yield from running_airflow(home, env)


@pytest.fixture
def table(postgres: Any) -> Iterator[str]:
    name = postgres.table("sql_recovery")
    yield name
    engine = postgres.engine()
    with engine.begin() as conn:
        for suffix in ("", STAGING_SUFFIX, DONE_SUFFIX, MERGES_SUFFIX):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}{suffix}"))
    engine.dispose()


def _setup(airflow: RealAirflow, tmp_path: Path, dag_id: str, table: str, **options: Any) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "t.csv").write_text("id,x\n" + "".join(f"{i},{i}\n" for i in range(ROWS)))
    (tmp_path / "score.py").write_text(SCRIPT)
    settings = {"if_exists": "append", "key": None} | options
    source = DAG.format(
        dag_id=dag_id,
        input=folder,
        output=tmp_path / "out",
        script=tmp_path / "score.py",
        table=table,
        **settings,
    )
    airflow.add_dag(dag_id, source)
    airflow.wait_for_dag(dag_id)


def _count(postgres: Any, query: str) -> list[tuple[Any, ...]]:
    engine = postgres.engine()
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(sa.text(query))]
    engine.dispose()
    return found


def test_tasks_sigkilled_mid_transaction_and_before_the_status_leave_every_row_once(
    airflow: RealAirflow, tmp_path: Path, postgres: Any, table: str
) -> None:
    _setup(airflow, tmp_path, "sql_kills", table)
    points = {
        "sql_staging:mb-000001": "inside the staging transaction, before its commit",
        "sql_staged:mb-000002": "after the staging commit, before the status",
        "sql_merging": "inside the aggregate's merge transaction, before its commit",
    }
    run_id, killed = trigger_and_kill(
        airflow, "sql_kills", list(points), tmp_path, airflow.home / "failpoints.json"
    )
    assert set(killed) == set(points), f"not every point was reached: {set(points) - set(killed)}"
    assert airflow.dag_run("sql_kills", run_id)["state"] == "success"
    assert _count(postgres, f"SELECT id, score FROM {table} ORDER BY id") == [
        (i, 2.0 * i) for i in range(ROWS)
    ]
    assert _count(postgres, f"SELECT COUNT(*) FROM {table}{STAGING_SUFFIX}") == [(0,)]
    assert _count(postgres, f"SELECT rows FROM {table}{MERGES_SUFFIX}") == [(ROWS,)]
    tis = airflow.task_instances("sql_kills", run_id)
    retried = {(t["task_id"], t["map_index"]) for t in tis if t["try_number"] > 1}
    assert {("score.run", 1), ("score.run", 2), ("score.aggregate", -1)} <= retried, retried
    summary = json.loads((tmp_path / "out" / run_id / "_parallelrun" / "summary.json").read_text())
    assert summary["sql_output"]["rows_written"] == ROWS

    # Clearing the whole run's tasks after it succeeded writes nothing twice.
    airflow.clear_task_instances("sql_kills", run_id, ["score.run", "score.aggregate"], only_failed=False)
    assert airflow.wait_for_run("sql_kills", run_id, timeout=600) == "success"
    assert _count(postgres, f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {table}") == [(ROWS, ROWS)]


def test_an_upsert_killed_in_its_merge_and_run_again_keeps_one_row_per_key(
    airflow: RealAirflow, tmp_path: Path, postgres: Any, table: str
) -> None:
    _setup(airflow, tmp_path, "sql_upsert_kill", table, if_exists="upsert", key=["id"])
    first, killed = trigger_and_kill(
        airflow, "sql_upsert_kill", ["sql_merging"], tmp_path, airflow.home / "failpoints.json"
    )
    assert set(killed) == {"sql_merging"}
    assert airflow.dag_run("sql_upsert_kill", first)["state"] == "success"
    second = airflow.trigger("sql_upsert_kill")
    assert airflow.wait_for_run("sql_upsert_kill", second, timeout=600) == "success"
    assert _count(postgres, f"SELECT id, score FROM {table} ORDER BY id") == [
        (i, 2.0 * i) for i in range(ROWS)
    ]
    assert _count(postgres, f"SELECT COUNT(*) FROM {table}{MERGES_SUFFIX}") == [(2,)]
