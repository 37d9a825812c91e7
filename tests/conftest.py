"""Test set-up shared by every test: an Airflow home of its own, made before Airflow is imported.

Airflow reads its configuration when first imported, so the environment is set here, at
collection time. Unit tests never import Airflow; the Airflow tests share one SQLite database
and two DAG bundles: the repository's ``dags/`` and a temporary folder tests write DAGs into.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Entry scripts shaped like Microsoft's examples: they import what only their worker's
#: interpreter has (azureml-core, the module beside them), so pytest must not import them.
collect_ignore = ["azure_examples"]
DAGS = REPO / "dags"

_HOME = Path(tempfile.mkdtemp(prefix="parallelrun-test-airflow-"))
TEST_DAGS = _HOME / "test_dags"
TEST_DAGS.mkdir()

os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": "dags-folder",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {},
                },
                {
                    "name": "test-dags",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(TEST_DAGS)},
                },
            ]
        ),
        "PARALLELRUN_EXAMPLES_DIR": str(_HOME / "examples"),
        # Warm worker pools of this test session live here (short: it holds Unix sockets).
        "PARALLELRUN_POOL_DIR": tempfile.mkdtemp(prefix="prp-"),
    }
)
# The DAG processor puts the DAG folders on sys.path; tests importing DAG files do the same.
for folder in (str(DAGS), str(TEST_DAGS)):
    if folder not in sys.path:
        sys.path.insert(0, folder)


def stop_worker_pools(folder: str) -> None:
    """Kill, by process id, every warm worker pool started under ``folder`` (its workers follow)."""
    for pid_file in Path(folder).glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def pytest_sessionfinish(session, exitstatus):
    from tests.object_stores import stop_servers

    stop_servers()
    stop_worker_pools(os.environ["PARALLELRUN_POOL_DIR"])
    shutil.rmtree(os.environ["PARALLELRUN_POOL_DIR"], ignore_errors=True)
    shutil.rmtree(_HOME, ignore_errors=True)


# The SQL tests' real databases (SQLite, PostgreSQL, MariaDB): see tests/databases.py.
from tests.databases import sql_database  # noqa: E402, F401

# The object-store tests' real servers (S3 by moto, Azure Blob by Azurite): see tests/object_stores.py.
from tests.object_stores import azure_store, object_store, s3_store  # noqa: E402, F401
