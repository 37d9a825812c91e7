"""Credentials come from an Airflow Connection and never show in a log, a report, the summary or XCom."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from tests.airflow.conftest import task_instances

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SECRET = "s3cr3t-Zq81-never-print-me"


class LockedFileSystem(MemoryFileSystem):
    """An in-memory store that refuses every caller without the right key and secret."""

    protocol = ("lockedmem",)
    root_marker = "/"
    store: dict[str, Any] = {}  # its own files, not the memory filesystem's
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        # MemoryFileSystem strips only "memory://".
        return super()._strip_protocol(path.removeprefix("lockedmem://"))

    def __init__(self, key: str | None = None, secret: str | None = None, **kwargs: Any) -> None:
        if key != "scorer" or secret != SECRET:
            raise PermissionError("lockedmem: wrong or missing credentials; give key and secret")
        super().__init__(**kwargs)


@pytest.fixture
def locked_store(monkeypatch: pytest.MonkeyPatch):
    fsspec.register_implementation("lockedmem", LockedFileSystem, clobber=True)
    LockedFileSystem.store.clear()
    fs = LockedFileSystem(key="scorer", secret=SECRET)
    for i in range(6):
        fs.pipe_file(f"/in/item{i}.txt", f"v{i}".encode())
    monkeypatch.setenv(
        "AIRFLOW_CONN_LOCKED_STORE",
        json.dumps({"conn_type": "generic", "login": "scorer", "password": SECRET, "extra": {}}),
    )
    yield fs
    from airflow_parallelrun.core.storage.location import clear_storage_options

    clear_storage_options()
    LockedFileSystem.store.clear()


DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="lockedmem://in", pattern="*.txt", conn_id={conn!r}),
        output_path="lockedmem://out",
        output_conn_id={conn!r},
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", process_count_per_node=1),
    )
"""


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "score.py"
    script.write_text("def run(mini_batch):\n    return [open(p).read() for p in mini_batch]\n")
    return script


def test_a_connection_gives_the_credentials_and_no_secret_is_written_anywhere(
    write_dag, tmp_path: Path, locked_store, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = write_dag(DAG_SOURCE.format(dag_id="locked_ok", conn="locked_store", script=_script(tmp_path)))
    dag_run = dag.test()
    assert dag_run.state == "success"
    assert locked_store.cat_file("/out/parallel_run_step.txt").decode().split() == [f"v{i}" for i in range(6)]

    # Everything the run wrote to its storage: summary, report, manifest, statuses, parts.
    written = {path: locked_store.cat_file(path) for path in locked_store.find("/out")}
    assert any(path.endswith("summary.json") for path in written)
    assert all(SECRET.encode() not in content for content in written.values())
    # XCom of every task of the run, and the serialized DAG.
    values, serialized = _stored_in_airflow(dag_run)
    assert values and all(SECRET not in v for v in values)
    assert "locked_store" in serialized and SECRET not in serialized
    # The task logs, as dag.test() prints them.
    logs = capfd.readouterr()
    assert "parallel run succeeded" in logs.out + logs.err  # the logs were captured
    assert SECRET not in logs.out and SECRET not in logs.err


def _stored_in_airflow(dag_run: Any) -> tuple[list[str], str]:
    """Return the run's XCom values and its serialized DAG, as text, from the metadata database."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        values = [
            str(row.value)
            for row in session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        ]
        data = session.query(SerializedDagModel).filter_by(dag_id=dag_run.dag_id).one().data
    return values, json.dumps(data)


def test_without_the_connection_the_store_refuses_and_the_run_says_why(
    write_dag, tmp_path: Path, locked_store
) -> None:
    dag = write_dag(DAG_SOURCE.format(dag_id="locked_none", conn=None, script=_script(tmp_path)))
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert task_instances(dag_run)[("score.partition", -1)][0] == "failed"


def test_the_hook_turns_a_connection_into_storage_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_S3_LIKE",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "scorer",
                "password": SECRET,
                "extra": {"storage_options": {"endpoint_url": "http://minio:9000"}, "password_option": "pw"},
            }
        ),
    )
    hook = ParallelRunStorageHook("s3_like")
    assert hook.storage_options() == {"endpoint_url": "http://minio:9000", "key": "scorer", "pw": SECRET}
    assert hook.get_conn() == hook.storage_options()


def test_operators_sensor_and_trigger_take_connections_from_the_hook_not_from_each_other() -> None:
    import ast
    import importlib.util

    roles = ("operators", "sensors", "triggers")
    for role in roles:
        spec = importlib.util.find_spec(f"airflow_parallelrun.{role}")
        assert spec is not None and spec.submodule_search_locations
        for path in Path(next(iter(spec.submodule_search_locations))).glob("*.py"):
            imported = {
                node.module or ""
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom)
            }
            others = {f"airflow_parallelrun.{other}" for other in roles if other != role}
            crossing = {m for m in imported if any(m.startswith(o) for o in others)}
            # The sensor defers to its own trigger; nothing else crosses between the roles.
            if role == "sensors":
                crossing.discard("airflow_parallelrun.triggers.new_files")
            assert not crossing, (path, crossing)
    sources = "".join(
        Path(importlib.util.find_spec(f"airflow_parallelrun.{m}").origin).read_text()  # type: ignore[union-attr,arg-type]
        for m in ("sensors.new_files", "triggers.new_files", "operators.partition")
    )
    assert sources.count("airflow_parallelrun.hooks.storage import") == 3


STORE_DAG = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt", conn_id="{conn}"),
        output_path="{output}",
        output_conn_id="{conn}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", process_count_per_node=1),
    )
"""


def test_a_store_connection_gives_the_credentials_and_no_secret_is_written_anywhere(
    object_store,
    write_dag,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same on S3 (an ``aws`` Connection) and Azure Blob (a ``wasb`` one), as their providers say."""
    from airflow_parallelrun.hooks.storage import AZURE_REQUEST_LOGGER

    secret = object_store.secret
    for i in range(4):
        object_store.put(f"in/item{i}.txt", f"v{i}".encode())
    dag_id = f"store_secret_{object_store.kind}"
    dag = write_dag(
        STORE_DAG.format(
            dag_id=dag_id,
            input=object_store.url("in"),
            output=object_store.url("out"),
            conn=object_store.conn_id,
            script=_script(tmp_path),
        )
    )
    dag_run = dag.test()
    assert dag_run.state == "success"
    fs = object_store.fs()
    assert fs.cat_file(object_store.path("out/parallel_run_step.txt")).decode().split() == [
        f"v{i}" for i in range(4)
    ]

    # Everything the run wrote to the store: summary, report, manifest, statuses, parts.
    written = {path: fs.cat_file(path) for path in fs.find(object_store.path("out"))}
    assert any(path.endswith("summary.json") for path in written)
    assert all(secret.encode() not in content for content in written.values())
    values, serialized = _stored_in_airflow(dag_run)
    assert values and all(secret not in v for v in values)
    assert object_store.conn_id in serialized and secret not in serialized
    # The task logs, as dag.test() prints them and as Python's logging records them.
    captured = capfd.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert "parallel run succeeded" in logs  # the logs were captured
    assert secret not in logs
    # azure-core's header log of every request is kept out of the task logs.
    assert "Request URL:" not in logs and AZURE_REQUEST_LOGGER not in logs
