"""The real databases the SQL tests run on: SQLite (a file), PostgreSQL and MariaDB on this machine.

``sql_database`` is a fixture parametrised over the three. PostgreSQL (127.0.0.1:5432, trust,
database ``test``) and MariaDB (127.0.0.1:3306, root without password, database ``test``) run
here before every session and in CI; a missing server skips its tests with a message, or fails
them under ``CI=true``. Every test gets table names of its own (``db.table("scores")``) and the
fixture drops them afterwards, so tests and parallel runs never share a table.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get(
    "PARALLELRUN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("PARALLELRUN_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
KINDS = ("sqlite", "postgresql", "mariadb")


def skip_or_fail(message: str) -> None:
    """Skip the test, or fail it under ``CI=true``, where every service must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class Database:
    """One real database for one test: its SQLAlchemy URL and an Airflow Connection to it."""

    kind: str
    url: str
    created: list[str] = field(default_factory=list)

    def table(self, name: str) -> str:
        """Return a table name unique to this test (dropped when the test ends)."""
        unique = f"{name}_{uuid.uuid4().hex[:8]}"
        self.created.append(unique)
        return unique

    def connection_json(self) -> str:
        """Return this database as an ``AIRFLOW_CONN_<ID>`` value, the way users define Connections."""
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        if self.kind == "sqlite":
            return json.dumps({"conn_type": "sqlite", "host": url.database})
        return json.dumps(
            {
                "conn_type": "postgres" if self.kind == "postgresql" else "mysql",
                "host": url.host,
                "port": url.port,
                "login": url.username,
                "password": url.password or "",
                "schema": url.database,
            }
        )

    def engine(self):
        from sqlalchemy import create_engine

        return create_engine(self.url)


def _reachable(url: str) -> str | None:
    """Return why ``url`` cannot be reached, or None."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return None


def open_database(kind: str, tmp_path: Path) -> Database:
    """Return the database ``kind``, skipping (or failing under CI) when its server is not there."""
    if kind == "sqlite":
        return Database(kind, f"sqlite:///{tmp_path / 'test.db'}")
    url = POSTGRES_URL if kind == "postgresql" else MARIADB_URL
    if reason := _reachable(url):
        skip_or_fail(
            f"the {kind} server at {url} is not reachable ({reason}); start it (see docs/development.md)"
        )
    return Database(kind, url)


def drop_tables(db: Database) -> None:
    from sqlalchemy import inspect, text

    engine = db.engine()
    with engine.begin() as conn:
        existing = set(inspect(conn).get_table_names())
        for name in db.created:
            if name in existing:
                conn.execute(text(f"DROP TABLE {name}"))
    engine.dispose()


@pytest.fixture(params=KINDS)
def sql_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    db = open_database(request.param, tmp_path)
    yield db
    drop_tables(db)
