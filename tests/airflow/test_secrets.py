"""Secrets in ``environment_variables``: rendered inside each task, seen by the worker, stored nowhere.

A secret comes from an Airflow Connection or Variable through a template such as
``"{{ conn.my_api.password }}"``. It must reach the entry script's environment, and never the
metadata database (serialized DAG, rendered template fields, XCom), the run's storage, or a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator
from tests.airflow.airflow_versions import dag_serialization
from tests.airflow.conftest import task_instances

pytestmark = pytest.mark.airflow

#: The entry script proves it saw each secret by returning its hash, and prints it, as a careless
#: script would.
SCRIPT = """
import hashlib
import os

def run(mini_batch):
    token, extra = os.environ["API_TOKEN"], os.environ["EXTRA_VALUE"]
    print("the token is", token, "and the value is", extra)
    return [hashlib.sha256((token + "|" + extra).encode()).hexdigest() for _ in mini_batch]
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script="{script}",
            mini_batch_size="1",
            run_max_try=1,
            process_count_per_node=1,
            warm_workers={warm},
            environment_variables={{
                "API_TOKEN": "{{{{ conn.{conn_id}.password }}}}",
                "EXTRA_VALUE": "{{{{ var.value.{var_id} }}}}",
                "GREETING": "{greeting}",
            }},
        ),
    )
"""


def _files_containing(folder: Path, needles: list[str]) -> dict[str, list[str]]:
    """Return ``{needle: [files under folder holding it]}``, reading every file as bytes."""
    found: dict[str, list[str]] = {needle: [] for needle in needles}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            for needle in needles:
                if needle.encode() in data:
                    found[needle].append(str(path))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("warm", [True, False], ids=["warm_workers", "own_worker"])
def test_a_secret_reaches_the_worker_and_no_database_xcom_or_file(
    write_dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm: bool
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    extra = f"val-{uuid.uuid4().hex}"
    greeting = f"hello-{uuid.uuid4().hex[:8]}"
    conn_id, var_id = f"pr_api_{uuid.uuid4().hex[:8]}", f"pr_value_{uuid.uuid4().hex[:8]}"
    # Connections and Variables from the environment, as a secrets backend: not in the database.
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "http", "password": token})
    )
    monkeypatch.setenv(f"AIRFLOW_VAR_{var_id.upper()}", extra)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"item{i}.txt").write_text(str(i))
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    dag_id = f"secrets_{tmp_path.name}"
    dag = write_dag(
        DAG_SOURCE.format(
            dag_id=dag_id,
            input=folder,
            output=tmp_path / "out",
            script=script,
            warm=warm,
            conn_id=conn_id,
            var_id=var_id,
            greeting=greeting,
        )
    )
    dag_run = dag.test()
    assert str(dag_run.state) == "success", task_instances(dag_run)

    # The worker saw both secrets: each item's output is the hash of the two.
    expected = hashlib.sha256(f"{token}|{extra}".encode()).hexdigest()
    merged = next((tmp_path / "out").glob("*/parallel_run_step.txt")).read_text().split()
    assert merged == [expected] * 3

    # Nowhere in the run's storage, the metadata database (serialized DAG, rendered template
    # fields, XCom, logs table), or the warm pools' folder (sockets, pool logs).
    from airflow.configuration import conf

    database = Path(conf.get("database", "sql_alchemy_conn").removeprefix("sqlite:///")).parent
    places = [tmp_path / "out", database, Path(os.environ["PARALLELRUN_POOL_DIR"])]
    for place in places:
        found = _files_containing(place, [token, extra])
        assert found == {token: [], extra: []}, f"a secret is stored under {place}: {found}"

    # The serialized DAG shows the variables' names, never a value, not even a literal one.
    serialized = json.dumps(_serialized_dag(dag_id))
    assert "GREETING" in serialized and "API_TOKEN" in serialized
    assert greeting not in serialized and token not in serialized

    # XCom holds descriptors: the partition's rendered config does not carry the environment.
    xcoms = _xcom_values(dag_id, dag_run.run_id)
    assert xcoms and not any(token in v or extra in v or greeting in v for v in xcoms)


def test_the_serialized_dag_shows_environment_names_not_literal_values(tmp_path: Path) -> None:
    from airflow.sdk import DAG

    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    with DAG("secrets_serialized", schedule=None) as dag:
        ParallelRunOperator(
            task_id="score",
            inputs=FileDataset(path=str(tmp_path)),
            output_path=str(tmp_path / "out"),
            config=ParallelRunConfig(
                entry_script=str(script),
                environment_variables={"MODEL_URL": "https://models.example/m-1234567", "API_KEY": "{{ x }}"},
            ),
        )
    text = json.dumps(dag_serialization().to_dict(dag))
    assert "MODEL_URL" in text and "API_KEY" in text
    assert "https://models.example/m-1234567" not in text


def _serialized_dag(dag_id: str) -> dict:
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(SerializedDagModel).filter_by(dag_id=dag_id).one()
        return row.data


def _xcom_values(dag_id: str, run_id: str) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_id, run_id=run_id).all()
        return [json.dumps(row.value) for row in rows]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_what_the_entry_script_prints_of_a_secret_is_masked_in_the_task_logs(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Under a real scheduler, where task logs are files written by each task's supervisor."""
    from tests.airflow.real_airflow import running_airflow

    token, extra = f"tok-{uuid.uuid4().hex}", f"val-{uuid.uuid4().hex}"
    conn_id, var_id = "pr_api_masked", "pr_value_masked"  # a Variable name Airflow does not mask
    home = tmp_path_factory.mktemp("secrets-airflow")
    env = {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps({"conn_type": "http", "password": token}),
        f"AIRFLOW_VAR_{var_id.upper()}": extra,
    }
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"item{i}.txt").write_text(str(i))
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    dag_id = "secrets_masked"
    source = DAG_SOURCE.format(
        dag_id=dag_id,
        input=folder,
        output=tmp_path / "out",
        script=script,
        warm=True,
        conn_id=conn_id,
        var_id=var_id,
        greeting="hello",
    )
    for airflow in running_airflow(home, env):
        airflow.add_dag(dag_id, source)
        airflow.wait_for_dag(dag_id, timeout=90)
        run_id = airflow.trigger(dag_id)
        state = airflow.wait_for_run(dag_id, run_id, timeout=180)
        tis = airflow.task_instances(dag_id, run_id)
        assert state == "success", [(t["task_id"], t["map_index"], t["state"]) for t in tis]
        logs = sorted(
            airflow.logs.glob(f"dag_id={dag_id}/run_id=*/task_id=score.run/map_index=*/attempt=1.log")
        )
        assert len(logs) == 2
        for log in logs:
            assert "the token is *** and the value is ***" in log.read_text(), log.read_text()[-3000:]

    expected = hashlib.sha256(f"{token}|{extra}".encode()).hexdigest()
    assert (tmp_path / "out" / run_id / "parallel_run_step.txt").read_text().split() == [expected] * 2
    # Nowhere: task logs, the metadata database, the run's storage, the pools' folder. Except the
    # scheduler's console log: Airflow 3.3.2's LocalExecutor echoes each task's stdout there
    # without its secrets masker, a Connection password Airflow masks itself included.
    console = home / "logs" / "scheduler.log"
    for place in (home, tmp_path / "out", Path(os.environ["PARALLELRUN_POOL_DIR"])):
        found = _files_containing(place, [token, extra])
        found = {needle: [f for f in files if f != str(console)] for needle, files in found.items()}
        assert found == {token: [], extra: []}, f"a secret is stored under {place}: {found}"
