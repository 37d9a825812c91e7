"""Exactly once on S3 and Azure Blob under a real scheduler, with task processes SIGKILLed at every point.

The run's input and output are on the store (moto's S3 server, Azurite), reached through an
``aws`` or ``wasb`` Connection that the Airflow components get in their environment. As in
``test_recovery_real_scheduler.py`` for local disk, a task process reaching an armed failpoint
stops and writes its process id; the test SIGKILLs it and Airflow retries the task. On an object
store ``replace:<name>`` is the moment before the one put that publishes a part or a status.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.real_airflow import RealAirflow, running_airflow, trigger_and_kill
from tests.airflow.test_recovery_real_scheduler import SCRIPT
from tests.object_stores import KINDS, ObjectStore, make_store

# The timeouts only bound a hang (Airflow's start-up and a run take long on a busy machine).
pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1200)]

DAG = """
from datetime import timedelta
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

retry_fast = {{"retries": 2, "retry_delay": timedelta(seconds=1)}}
with DAG("{dag_id}", schedule=None, default_args=retry_fast) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt", conn_id="{conn}"),
        output_path="{output}/{{{{ run_id }}}}",
        output_conn_id="{conn}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", run_max_try=1,
                                 error_threshold=-1, process_count_per_node=2),
    )
"""

POINTS = {
    "script_init": "in init()",
    "script_run": "in run()",
    "replace:mb-000001.*.txt": "before the part's put",  # parts are named with the run key
    "part_published:mb-000002": "between the part and the status",
    "replace:mb-000003.json": "before the status's put",
}


@pytest.fixture(scope="module")
def stores() -> dict[str, ObjectStore]:
    return {kind: make_store(kind, conn_id=f"recovery_{kind}") for kind in KINDS}


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, stores: dict[str, ObjectStore]
) -> Iterator[RealAirflow]:
    home = tmp_path_factory.mktemp("store-recovery-airflow")
    env = {"PARALLELRUN_FAILPOINTS": str(home / "failpoints.json")}
    for store in stores.values():
        env.update(store.env())
    yield from running_airflow(home, env)


@pytest.mark.parametrize("kind", KINDS)
def test_tasks_sigkilled_at_every_point_leave_every_row_exactly_once_on_the_store(
    airflow: RealAirflow, stores: dict[str, ObjectStore], kind: str, tmp_path: Path
) -> None:
    store = stores[kind]
    for i in range(12):
        store.put(f"in/item{i:02d}.txt", f"v{i:02d}".encode())
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(SCRIPT.format(calls=str(tmp_path / "calls.txt"), flag="/nonexistent")))
    dag_id = f"store_recovery_{kind}"
    airflow.add_dag(
        dag_id,
        DAG.format(
            dag_id=dag_id, input=store.url("in"), output=store.url("out"), conn=store.conn_id, script=script
        ),
    )
    airflow.wait_for_dag(dag_id)

    run_id, killed = trigger_and_kill(
        airflow, dag_id, list(POINTS), tmp_path, airflow.home / "failpoints.json"
    )
    assert set(killed) == set(POINTS), f"not every point was reached: {set(POINTS) - set(killed)}"
    assert airflow.dag_run(dag_id, run_id)["state"] == "success"
    # Every row exactly once, in order, although five task processes died mid-way.
    fs = store.fs()
    out = store.path("out", run_id)
    assert fs.cat_file(f"{out}/parallel_run_step.txt").decode().split() == [f"v{i:02d}" for i in range(12)]
    summary = json.loads(fs.cat_file(f"{out}/_parallelrun/summary.json"))
    assert (summary["total_items"], summary["succeeded_items"], summary["failed_items"]) == (12, 12, 0)
    assert (summary["total_mini_batches"], summary["succeeded_mini_batches"]) == (6, 6)
    # One part per mini-batch: a retried task replaced its own part, never added a second.
    assert len(fs.ls(f"{out}/_parallelrun/parts", detail=False)) == 6
    tis = airflow.task_instances(dag_id, run_id)
    retried = {t["map_index"] for t in tis if t["task_id"] == "score.run" and t["try_number"] > 1}
    assert {1, 2, 3} <= retried, retried
