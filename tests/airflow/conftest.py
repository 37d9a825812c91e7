"""Fixtures for tests that run real Airflow: a migrated SQLite database and DAG files to test."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_DAGS

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Create the Airflow metadata database once per session."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=300
    )
    from airflow import settings

    settings.configure_orm()


def load_dag_module(path: Path) -> Any:
    """Import a DAG file as Airflow's DAG processor would, and return the module."""
    spec = importlib.util.spec_from_file_location(f"dagfile_{path.stem}_{uuid.uuid4().hex[:8]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def write_dag(airflow_db: None):
    """Write a DAG file into the test bundle and return its ``dag``; the file is removed after."""
    written: list[Path] = []

    def write(source: str, name: str | None = None) -> Any:
        path = TEST_DAGS / f"{name or 'dag_' + uuid.uuid4().hex[:10]}.py"
        path.write_text(textwrap.dedent(source))
        written.append(path)
        return load_dag_module(path).dag

    yield write
    for path in written:
        path.unlink(missing_ok=True)


def task_instances(dag_run: Any) -> dict[tuple[str, int], tuple[str, str | None]]:
    """Return ``{(task_id, map_index): (state, rendered map index)}`` of a finished DAG run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        dr = session.query(DagRun).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).one()
        return {
            (ti.task_id, ti.map_index): (str(ti.state), ti.rendered_map_index)
            for ti in dr.get_task_instances(session=session)
        }
