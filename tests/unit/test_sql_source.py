"""SqlDataset is checked when the DAG is parsed, and a query that is not read-only is refused by its text."""

from __future__ import annotations

import pytest

from airflow_parallelrun import ConfigError, SqlDataset
from airflow_parallelrun.core.sql.statements import check_read_only

URL = "postgresql+psycopg://scorer:pw-Zq81@db.example/dw"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"table": "t"}, "exactly one of conn_id="),
        ({"conn_id": "w", "url": URL, "table": "t"}, "exactly one of conn_id="),
        ({"conn_id": "", "table": "t"}, "conn_id='' must be an Airflow Connection id"),
        ({"url": "not a url", "table": "t"}, "url='not a url' is not a SQLAlchemy URL"),
        ({"conn_id": "w"}, "exactly one of table="),
        ({"conn_id": "w", "table": "t", "query": "SELECT 1"}, "exactly one of table="),
        ({"conn_id": "w", "table": "a.b.c"}, "table='a.b.c' is not a table name"),
        ({"conn_id": "w", "table": " "}, "table=' ' is not a table name"),
        ({"conn_id": "w", "table": "t", "columns": "id"}, "columns='id' is not a list of distinct column"),
        ({"conn_id": "w", "table": "t", "columns": ["a", "a"]}, "is not a list of distinct column"),
        ({"conn_id": "w", "table": "t", "key": [1]}, "key=[1] is not a list of distinct column"),
        ({"conn_id": "w", "query": "SELECT 1", "key": "id"}, "go with table=, not query="),
        ({"conn_id": "w", "query": "DELETE FROM t"}, "starts with 'DELETE', not SELECT or WITH"),
    ],
)
def test_a_bad_sql_dataset_is_refused_when_the_dag_is_parsed(kwargs: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        SqlDataset(**kwargs)
    assert says in str(info.value)
    assert "pw-Zq81" not in str(info.value)


def test_a_good_sql_dataset_keeps_its_values_and_never_shows_the_password() -> None:
    ds = SqlDataset(url=URL, table="sales.customers", columns=["id", "region"], key="id")
    assert (ds.table, ds.columns, ds.key, ds.tabular) == ("sales.customers", ("id", "region"), ("id",), True)
    assert "pw-Zq81" not in repr(ds) and "pw-Zq81" not in ds.describe()
    assert ds.describe() == "sql url='postgresql+psycopg://scorer:***@db.example/dw' table='sales.customers'"
    assert "pw-Zq81" not in str(ds.fingerprint())
    by_conn = SqlDataset(conn_id="warehouse", query="SELECT * FROM t WHERE day = '{{ ds }}'")
    assert by_conn.describe() == "sql conn_id='warehouse' query=\"SELECT * FROM t WHERE day = '{{ ds }}'\""


def test_a_templated_table_or_query_is_checked_once_rendered() -> None:
    templated = SqlDataset(conn_id="w", query="{{ params.query }}")
    with pytest.raises(ConfigError, match=r"query='UPDATE t SET a = 1' is not read-only"):
        templated.rendered(None, "UPDATE t SET a = 1")
    assert templated.rendered(None, "SELECT 1;").query == "SELECT 1"
    with pytest.raises(ConfigError, match=r"table='x.y.z' is not a table name"):
        SqlDataset(conn_id="w", table="{{ params.t }}").rendered("x.y.z", None)


def test_an_unresolved_connection_says_how_to_resolve_it() -> None:
    with pytest.raises(ConfigError, match="conn_id='w' has not been resolved to a URL"):
        SqlDataset(conn_id="w", table="t").engine_url()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM t",
        "select * from t;",
        "  -- the nightly read\n/* a note; with a semicolon */ WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "SELECT ';DROP TABLE t' AS a, \"odd;name\" FROM t -- ; DROP TABLE t",
        "SELECT $$; DROP TABLE t$$ AS a",
        "SELECT 'it''s; fine' AS a; -- trailing comment",
    ],
)
def test_one_select_or_with_query_is_read_only(query: str) -> None:
    check_read_only(query)


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("UPDATE t SET a = 1", "starts with 'UPDATE'"),
        ("DROP TABLE t", "starts with 'DROP'"),
        ("/* SELECT */ DELETE FROM t", "starts with 'DELETE'"),
        ("SELECT 1; DROP TABLE t", "more than one statement"),
        ("SELECT 1;DROP TABLE t;", "more than one statement"),
        ("SELECT * INTO copy FROM t", "selects INTO a table or a file"),
        ("-- only a comment", "starts with 'nothing but comments'"),
        ("   ", "is empty"),
    ],
)
def test_anything_else_is_refused_before_it_reaches_a_database(query: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_read_only(query)
    assert why in str(info.value)
