"""The SQL example DAG ``parallelrun_sql``, run whole with ``dag.test()``: on its own SQLite database
(the empty ``conn_id`` Param, nothing set up) and on PostgreSQL through an Airflow Connection.

Each run scores every customer once into ``customer_scores``; a second run, after customers
changed and new ones arrived, updates their rows rather than adding copies.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.airflow.conftest import load_dag_module
from tests.conftest import DAGS

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

CONN_ID = "parallelrun_sql_example_pg"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict]:
    """Yield where the example's tables are and the run conf that points the example there."""
    from tests.databases import POSTGRES_URL, Database, open_database

    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(tmp_path))
    if request.param == "sqlite":
        yield {"url": f"sqlite:///{tmp_path / 'examples.db'}", "conf": {}}
        return
    from tests.airflow.real_airflow import postgres_database

    open_database("postgresql", tmp_path)  # skips, or fails under CI, when the server is not there
    # A database of its own: the example's fixed table names cannot meet another test's.
    with postgres_database(POSTGRES_URL, prefix="sql_example_") as url:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", Database("postgresql", url).connection_json())
        yield {"url": url, "conf": {"conn_id": CONN_ID}}


def read(url: str, query: str) -> pd.DataFrame:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(text(query), conn)
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def expected_scores(url: str, model_path: Path) -> pd.Series:
    """Return each customer's score as the model gives it on the table as it is now, by customer_id."""
    from parallelrun_examples.customers import FEATURES

    customers = read(url, "SELECT * FROM customers ORDER BY customer_id")
    scores = joblib.load(model_path).predict_proba(customers[FEATURES])[:, 1]
    return pd.Series(scores, index=customers["customer_id"].to_numpy(), name="score")


def stored_scores(url: str) -> pd.Series:
    frame = read(url, "SELECT customer_id, score FROM customer_scores ORDER BY customer_id")
    assert frame["customer_id"].is_unique, "a customer has more than one row in customer_scores"
    return pd.Series(frame["score"].to_numpy(), index=frame["customer_id"].to_numpy(), name="score")


def summary_of(data: Path, dag_run: Any) -> dict:
    return json.loads((data / "out" / "sql" / dag_run.run_id / "_parallelrun" / "summary.json").read_text())


def test_every_customer_is_scored_once_and_a_second_run_updates_their_rows(
    airflow_db: None, tmp_path: Path, database: dict
) -> None:
    from parallelrun_examples.customers import EXAMPLE_ROWS, customers_frame

    dag = load_dag_module(DAGS / "parallelrun_sql.py").dag
    url, conf = database["url"], database["conf"]
    first = dag.test(logical_date=dt.datetime(2024, 6, 1, 3, tzinfo=dt.UTC), run_conf=conf)
    assert first.state == "success"

    model = tmp_path / "customers" / "model.joblib"
    scores = stored_scores(url)
    assert len(scores) == EXAMPLE_ROWS
    expected = expected_scores(url, model)
    pd.testing.assert_series_equal(scores, expected, check_exact=False, rtol=0, atol=1e-12)
    summary = summary_of(tmp_path, first)
    assert (summary["status"], summary["total_mini_batches"], summary["succeeded_items"]) == (
        "succeeded",
        EXAMPLE_ROWS // 2000,
        EXAMPLE_ROWS,
    )
    assert summary["sql_output"]["rows_written"] == EXAMPLE_ROWS

    # The night after: every 7th customer opened ten support tickets, and 250 customers joined.
    newcomers = customers_frame(EXAMPLE_ROWS + 250).iloc[EXAMPLE_ROWS:]
    execute(url, "UPDATE customers SET support_tickets = support_tickets + 10 WHERE customer_id % 7 = 0")
    newcomers.to_sql("customers", url, if_exists="append", index=False)
    second = dag.test(logical_date=dt.datetime(2024, 6, 2, 3, tzinfo=dt.UTC), run_conf=conf)
    assert second.state == "success"

    rescored = stored_scores(url)
    assert len(rescored) == EXAMPLE_ROWS + 250
    expected = expected_scores(url, model)
    pd.testing.assert_series_equal(rescored, expected, check_exact=False, rtol=0, atol=1e-12)
    changed = rescored.index[rescored.index % 7 == 0]
    changed = changed[changed <= EXAMPLE_ROWS]
    assert (rescored[changed] > scores[changed]).all(), "more tickets must raise the churn score"
    unchanged = scores.index[scores.index % 7 != 0]
    np.testing.assert_allclose(rescored[unchanged], scores[unchanged], rtol=0, atol=1e-12)
    assert summary_of(tmp_path, second)["sql_output"]["rows_written"] == EXAMPLE_ROWS + 250


def test_it_runs_nightly_at_three_utc_and_its_conn_id_param_takes_connection_ids_only(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import CronTriggerTimetable
    from airflow.sdk.exceptions import ParamValidationError

    from tests.airflow.test_schedule_examples import at, next_run

    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(tmp_path))
    dag = load_dag_module(DAGS / "parallelrun_sql.py").dag
    assert isinstance(dag.timetable, CronTriggerTimetable) and dag.catchup is False
    assert next_run(dag, at(2024, 6, 1, 3, 0)) == at(2024, 6, 2, 3, 0)
    assert next_run(dag, at(2024, 6, 1, 13, 7)) == at(2024, 6, 2, 3, 0)
    param = dag.params.get_param("conn_id")
    assert param.resolve("") == "" and param.resolve("warehouse_pg-2.eu") == "warehouse_pg-2.eu"
    for bad in ("{{ 7 * 7 }}", "a b", "x;DROP"):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)
    # Empty: the examples' SQLite file under the examples folder, for the input and the output alike.
    partition, run = dag.get_task("score.partition"), dag.get_task("score.run")
    assert partition.inputs.url == run.partial_kwargs["sql_output"].url == f"sqlite:///{tmp_path}/examples.db"
