"""NewFilesTrigger and NewFilesSensor on object stores under a real scheduler, triggerer and executor.

The Connections live in Airflow's database (added through the REST API; the components get no
``AIRFLOW_CONN_*``), so every fetch goes through Airflow as in a deployment. In the triggerer the
trigger fetches its Connection in the event loop, and the provider's ``get_fs`` (the Amazon
provider's runs ``asyncio.run`` inside) is called in a thread, where the provider's hook fetches the
Connection again, synchronously: these tests show both work.

A real Airflow takes a while to start, so each store kind runs one of the two: the AssetWatcher's
trigger on S3 (moto), the deferrable sensor on Azure Blob (Azurite). Both kinds run both under
``dag.test()`` in ``test_new_files_on_object_stores.py``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.real_airflow import RealAirflow, running_airflow
from tests.object_stores import ObjectStore, make_store

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(1200)]

#: Longer than the watcher's poke interval plus settle period: time for a second event to show.
QUIET = 8

RECORD = """
    @task
    def record(files):
        from airflow.sdk import get_current_context

        run_id = get_current_context()["run_id"]
        files = json.loads(files) if isinstance(files, str) else files  # TRIGGERING_FILES renders JSON
        Path("{out}", run_id.replace(":", "_") + ".json").write_text(json.dumps(files))
"""

TRIGGER_DAG = (
    """
import json
from pathlib import Path
from airflow.sdk import DAG, Asset, AssetWatcher, task
from airflow_parallelrun import TRIGGERING_FILES, NewFilesTrigger

incoming = Asset(
    "{dag_id}_incoming",
    watchers=[
        AssetWatcher(
            name="{dag_id}_watcher",
            trigger=NewFilesTrigger(
                path="{folder}", pattern="*.png", conn_id="{conn_id}", settle_seconds=1, poke_interval=1
            ),
        )
    ],
)

with DAG("{dag_id}", schedule=[incoming], catchup=False) as dag:
"""
    + RECORD
    + """
    record(TRIGGERING_FILES)
"""
)

SENSOR_DAG = (
    """
import json
from pathlib import Path
from airflow.sdk import DAG, task
from airflow_parallelrun import NewFilesSensor

with DAG("{dag_id}", schedule=None) as dag:
    wait = NewFilesSensor(
        task_id="wait", path="{folder}", pattern="*.png", conn_id="{conn_id}", settle_seconds=1,
        poke_interval=1, timeout=600,
    )
"""
    + RECORD
    + """
    record(wait.output)
"""
)


def _add_connection(airflow: RealAirflow, store: ObjectStore) -> None:
    conn = store.connection()
    body = {
        "connection_id": store.conn_id,
        "conn_type": conn["conn_type"],
        "login": conn.get("login"),
        "password": conn.get("password"),
        "host": conn.get("host"),
        "extra": json.dumps(conn.get("extra", {})),
    }
    airflow.api("POST", "/api/v2/connections", json=body, expect=(201,))


@pytest.fixture(scope="module")
def airflow_and_stores(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RealAirflow, dict[str, ObjectStore]]]:
    token = uuid.uuid4().hex[:6]
    stores = {kind: make_store(kind, conn_id=f"watch_{kind}_{token}") for kind in ("s3", "azure")}
    for store in stores.values():  # make_store set them for this process: the components fetch from the DB
        for key in store.env():
            os.environ.pop(key, None)
    for airflow in running_airflow(tmp_path_factory.mktemp("real-airflow-object-stores")):
        for store in stores.values():
            _add_connection(airflow, store)
        yield airflow, stores


def _written(out: Path, count: int, airflow: RealAirflow, timeout: float = 300) -> list[list[str]]:
    """Wait until ``count`` runs recorded what they were given; return those lists, oldest first."""
    deadline = time.monotonic() + timeout
    while len(found := sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime)) < count:
        airflow.check_alive()
        assert time.monotonic() < deadline, f"{len(found)} of {count} runs recorded\n{airflow.describe()}"
        time.sleep(1)
    return [json.loads(p.read_text()) for p in found]


def _dag(airflow: RealAirflow, source: str, store: ObjectStore, name: str, out: Path) -> str:
    dag_id = f"{name}_{store.kind}_{uuid.uuid4().hex[:6]}"
    out.mkdir()
    airflow.add_dag(
        dag_id, source.format(dag_id=dag_id, folder=store.url("in"), conn_id=store.conn_id, out=out)
    )
    airflow.wait_for_dag(dag_id)
    return dag_id


def test_the_asset_watcher_s_trigger_on_s3_starts_one_run_per_batch_of_new_files(
    airflow_and_stores: tuple[RealAirflow, dict[str, ObjectStore]], tmp_path: Path
) -> None:
    airflow, stores = airflow_and_stores
    store, out = stores["s3"], tmp_path / "runs"
    dag_id = _dag(airflow, TRIGGER_DAG, store, "watch", out)
    airflow.unpause(dag_id)
    first = [store.put(f"in/{name}", b"png") for name in ("a.png", "b.png")]
    assert _written(out, 1, airflow) == [first]
    time.sleep(QUIET)
    newer = store.put("in/c.png", b"png")
    assert _written(out, 2, airflow) == [first, [newer]]
    time.sleep(QUIET)
    assert len(list(out.glob("*.json"))) == 2  # the files stay in the folder, yet fire no more


def test_the_deferrable_sensor_on_azure_blob_claims_the_new_files_in_a_real_triggerer(
    airflow_and_stores: tuple[RealAirflow, dict[str, ObjectStore]], tmp_path: Path
) -> None:
    airflow, stores = airflow_and_stores
    store, out = stores["azure"], tmp_path / "runs"
    dag_id = _dag(airflow, SENSOR_DAG, store, "sense", out)
    first = [store.put(f"in/{name}", b"png") for name in ("a.png", "b.png")]
    run_id = airflow.trigger(dag_id)
    assert airflow.wait_for_run(dag_id, run_id, timeout=600) == "success"
    assert _written(out, 1, airflow) == [first]
    task_logs = "".join(p.read_text() for p in airflow.logs.glob(f"dag_id={dag_id}/**/*") if p.is_file())
    assert "DEFERRED" in task_logs  # the files were first seen unsettled: the triggerer reported them
    newer = store.put("in/c.png", b"png")
    second = airflow.trigger(dag_id)
    assert airflow.wait_for_run(dag_id, second, timeout=600) == "success"
    assert _written(out, 2, airflow) == [first, [newer]]
