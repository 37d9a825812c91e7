"""NewFilesSensor and NewFilesTrigger on S3 (moto's server) and Azure Blob (Azurite), through Connections.

The sensor runs in DAG runs (``dag.test()``: its deferral goes to the trigger, run in this
process); the trigger runs as the triggerer runs it (``run()`` in an event loop, rebuilt from
what it serialized). Both reach the store with the filesystem the store's provider builds from an
``aws`` or ``wasb`` Connection, and keep their claims on the store (``<path>/_parallelrun_claims``).
The same under a real scheduler and triggerer: ``test_new_files_on_object_stores_real_scheduler.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_parallelrun.core.storage.claims import ClaimLedger, default_state_path
from airflow_parallelrun.triggers.new_files import NewFilesTrigger
from tests.airflow.test_new_files_trigger import HANG, _next_event, _rebuilt, taken_then_quiet
from tests.object_stores import ObjectStore

pytestmark = [pytest.mark.airflow]

SENSOR_DAG = """
import json
from pathlib import Path
from airflow.sdk import DAG, task
from airflow_parallelrun import NewFilesSensor

with DAG("{dag_id}", schedule=None) as dag:
    wait = NewFilesSensor(
        task_id="wait", path="{folder}", pattern="*.png", conn_id="{conn_id}", settle_seconds=0.3,
        poke_interval=0.2, timeout=600,
    )

    @task
    def record(taken):
        Path("{out}").write_text(json.dumps(taken))

    record(wait.output)
"""


def _ledger(store: ObjectStore) -> ClaimLedger:
    return ClaimLedger(default_state_path(store.url("in")), store.fs())


@pytest.mark.slow
def test_the_deferred_sensor_claims_new_files_on_the_store_and_the_next_run_only_newer_ones(
    object_store: ObjectStore, write_dag: Any, tmp_path: Path
) -> None:
    """The files are first seen unsettled, so the sensor defers and its trigger reports them."""
    out = tmp_path / "taken.json"
    dag = write_dag(
        SENSOR_DAG.format(
            dag_id=f"sensor_{object_store.kind}_{tmp_path.name}"[:200],
            folder=object_store.url("in"),
            conn_id=object_store.conn_id,
            out=out,
        )
    )
    first = [object_store.put(f"in/{name}", b"png") for name in ("a.png", "b.png")]
    object_store.put("in/notes.txt", b"not matched")
    run = dag.test()
    assert run.state == "success"
    assert json.loads(out.read_text()) == first
    assert _ledger(object_store).record(first[0])["owner"] == f"{dag.dag_id}/{run.run_id}/wait/-1"  # type: ignore[index]

    newer = object_store.put("in/c.png", b"png")
    assert dag.test().state == "success"
    assert json.loads(out.read_text()) == [newer]


@pytest.mark.slow
def test_the_trigger_claims_new_files_on_the_store_once_and_fires_an_unfired_batch_again(
    object_store: ObjectStore,
) -> None:
    first = [object_store.put(f"in/{name}", b"png") for name in ("a.png", "b.png")]
    trigger = NewFilesTrigger(
        path=object_store.url("in"),
        pattern="*.png",
        conn_id=object_store.conn_id,
        settle_seconds=0,
        poke_interval=0.05,
    )
    # Closed at the yield, never resumed: the triggerer stopped before it took the event.
    unfired = asyncio.run(_next_event(trigger, timeout=HANG))
    assert unfired is not None and unfired.payload["files"] == first
    ledger = _ledger(object_store)
    watch = {"path": object_store.url("in"), "pattern": "*.png"}
    assert ledger.unfired_batches(watch) == [(unfired.payload["batch"], first)]

    # Resumed after its first event: the triggerer took it, and the batch is closed.
    again, after = asyncio.run(taken_then_quiet(_rebuilt(trigger), first_within=HANG, quiet=2.0))
    assert (again.payload["files"], again.payload["batch"]) == (first, unfired.payload["batch"])
    assert after is None
    assert ledger.unfired_batches(watch) == []

    newer = object_store.put("in/c.png", b"png")
    event = asyncio.run(_next_event(_rebuilt(trigger), timeout=HANG))
    assert event is not None and event.payload["files"] == [newer]
    assert {ledger.record(u)["batch"] for u in first} == {unfired.payload["batch"]}  # type: ignore[index]
