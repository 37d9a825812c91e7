"""A SQL input or output names an Airflow Connection: a SQLAlchemy URL that reaches the database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sql.engine import make_engine, safe_url
from airflow_parallelrun.hooks.sql import sqlalchemy_url

pytestmark = [pytest.mark.airflow]


def test_a_connection_of_each_kind_reaches_its_real_database(sql_database, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SCORES_DB", sql_database.connection_json())
    engine = make_engine(sqlalchemy_url("scores_db"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 41 + 1")).scalar() == 42
    engine.dispose()


def test_the_password_is_in_the_url_but_never_in_what_is_shown(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "db.example",
                "login": "scorer",
                "password": "pw-Zq81",
                "schema": "dw",
            }
        ),
    )
    url = sqlalchemy_url("warehouse")
    assert url.password == "pw-Zq81"
    assert url.drivername == "postgresql+psycopg"
    assert safe_url(url) == "postgresql+psycopg://scorer:***@db.example/dw"


def test_extra_picks_the_driver_and_the_query(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TUNED",
        json.dumps(
            {
                "conn_type": "generic",
                "host": "db",
                "schema": "dw",
                "extra": {
                    "sqlalchemy_scheme": "postgresql+psycopg2",
                    "sqlalchemy_query": {"sslmode": "require"},
                },
            }
        ),
    )
    url = sqlalchemy_url("tuned")
    assert (url.drivername, dict(url.query)) == ("postgresql+psycopg2", {"sslmode": "require"})


def test_a_connection_type_without_a_driver_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HTTP_API", json.dumps({"conn_type": "http", "host": "api"}))
    with pytest.raises(ConfigError, match=r"'http_api' has type 'http'.*sqlalchemy_scheme"):
        sqlalchemy_url("http_api")
