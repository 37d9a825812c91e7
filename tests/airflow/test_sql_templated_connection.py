"""A templated ``conn_id`` on SqlDataset and SqlTable: a Param picks the database, ``url`` is the default.

The tasks render ``conn_id``; a non-empty rendering names the Airflow Connection used, an empty one
leaves ``url``. Without a template, exactly one of the two is still required. The whole path, on
SQLite and PostgreSQL, is run by tests/airflow/test_sql_example_dag.py.
"""

from __future__ import annotations

import json

import pytest

from airflow_parallelrun import SqlDataset, SqlTable
from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sql.connection import rendered_database
from tests.airflow.airflow_versions import fail_exception

pytestmark = [pytest.mark.airflow]

TEMPLATE = "{{ params.conn_id }}"
DEFAULT = "sqlite:////data/examples.db"


def test_a_templated_conn_id_may_come_with_a_url_to_fall_back_on() -> None:
    dataset = SqlDataset(conn_id=TEMPLATE, url=DEFAULT, table="customers")
    table = SqlTable(conn_id=TEMPLATE, url=DEFAULT, table="scores", key=["customer_id"], if_exists="upsert")
    assert (dataset.conn_id, table.conn_id) == (TEMPLATE, TEMPLATE)
    assert SqlDataset(conn_id=TEMPLATE, table="customers").url is None


@pytest.mark.parametrize(
    "make", [lambda **k: SqlDataset(table="t", **k), lambda **k: SqlTable(table="t", **k)], ids=["in", "out"]
)
def test_a_plain_conn_id_and_a_url_together_are_still_refused(make) -> None:
    with pytest.raises(ConfigError, match="exactly one of conn_id"):
        make(conn_id="warehouse", url=DEFAULT)
    with pytest.raises(ConfigError, match="exactly one of conn_id"):
        make()


def test_the_rendering_picks_the_connection_or_the_url() -> None:
    assert rendered_database("SqlTable", "warehouse", DEFAULT) == ("warehouse", None)
    assert rendered_database("SqlTable", "  ", DEFAULT) == (None, DEFAULT)
    assert rendered_database("SqlTable", None, DEFAULT) == (None, DEFAULT)
    with pytest.raises(ConfigError, match=r"SqlTable conn_id rendered empty and no url= is given"):
        rendered_database("SqlTable", "", None)


def test_the_partition_reads_the_rendered_connection_or_the_url(monkeypatch) -> None:
    AirflowFailException = fail_exception()
    from airflow_parallelrun.operators.sql_input import resolve_sql_input

    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE",
        json.dumps({"conn_type": "postgres", "host": "db", "login": "u", "password": "pw-77", "schema": "w"}),
    )
    dataset = SqlDataset(conn_id=TEMPLATE, url=DEFAULT, table="customers")
    chosen = resolve_sql_input(dataset, "customers", None, "warehouse")
    assert (chosen.conn_id, chosen.url, chosen.engine_url().password) == ("warehouse", None, "pw-77")
    default = resolve_sql_input(dataset, "customers", None, "")
    assert (default.conn_id, str(default.engine_url())) == (None, DEFAULT)
    with pytest.raises(AirflowFailException, match="conn_id rendered empty and no url= is given"):
        resolve_sql_input(SqlDataset(conn_id=TEMPLATE, table="customers"), "customers", None, "")


def test_the_run_and_aggregate_tasks_bind_the_rendered_connection_or_the_url(monkeypatch) -> None:
    AirflowFailException = fail_exception()
    from airflow_parallelrun.operators.run_context import sql_sink

    monkeypatch.setenv("AIRFLOW_CONN_LOCAL_DB", json.dumps({"conn_type": "sqlite", "host": "/data/other.db"}))
    output = SqlTable(conn_id=TEMPLATE, url=DEFAULT, table="scores", key=["customer_id"], if_exists="upsert")
    chosen = sql_sink(output, "local_db")
    assert chosen is not None and str(chosen.url) == "sqlite:////data/other.db"
    assert chosen.table.conn_id == "local_db" and chosen.table.key_columns == ("customer_id",)
    default = sql_sink(output, "")
    assert default is not None and str(default.url) == DEFAULT and default.table.conn_id is None
    with pytest.raises(AirflowFailException, match="conn_id rendered empty"):
        sql_sink(SqlTable(conn_id=TEMPLATE, table="scores"), "")


def test_the_tasks_render_conn_id_as_a_template_field() -> None:
    from airflow_parallelrun.operators.aggregate import AggregateOperator
    from airflow_parallelrun.operators.partition import PartitionOperator
    from airflow_parallelrun.operators.run import RunMiniBatchOperator

    assert "input_sql_conn_id" in PartitionOperator.template_fields
    assert "sql_output_conn_id" in RunMiniBatchOperator.template_fields
    assert "sql_output_conn_id" in AggregateOperator.template_fields
