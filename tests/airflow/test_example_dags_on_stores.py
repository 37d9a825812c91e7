"""The example DAGs with their data and output on an object store, as a deployment allows it.

``PARALLELRUN_EXAMPLES_STORE`` names the store folder the examples' ``data_dir`` may point at,
``PARALLELRUN_EXAMPLES_CONN_ID`` the Connection that reaches it. Each example runs on one store,
alternating S3 and Azure Blob to keep the time down (they share the code path for the store):
digits, sensor, form, sql and event_driven on one of the two, tabular, nightly with the report and
asset_or_time on the other. ``parallelrun_retrain`` has no data but its model, which stays local.
The event-driven example's trigger is run as the triggerer runs it (``run()`` in an event loop),
its event recorded as the triggerer records it, and the run it starts by ``dag.test()``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_parallelrun.core.storage.claims import ClaimLedger, default_state_path
from tests.airflow import test_schedule_examples
from tests.airflow.conftest import load_dag_module, task_instances
from tests.airflow.test_new_files_trigger import HANG, _next_event
from tests.airflow.test_schedule_examples import (
    asset_events,
    at,
    expected_lines,
    new_reports,
    read_table,
    sync_dags_folder,
    unpause,
)
from tests.conftest import DAGS
from tests.object_stores import ObjectStore, make_store

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

#: The fixture that starts a ``dag.test()`` run as the scheduler starts an asset-triggered one.
asset_triggered = test_schedule_examples.asset_triggered

EXAMPLE_ON = {
    "s3": ("parallelrun_digits", "digits", 1797),
    "azure": ("parallelrun_tabular", "tabular", 20000),
}


@pytest.fixture(scope="module")
def local_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local examples folder the tests share: the data and models are made there once."""
    return tmp_path_factory.mktemp("examples")


#: The examples whose ``data_dir`` Param takes the store folder.
ON_STORE_BY_PARAM = (
    "parallelrun_digits",
    "parallelrun_tabular",
    "parallelrun_sensor",
    "parallelrun_form",
    "parallelrun_nightly",
    "parallelrun_asset_or_time",
    "parallelrun_sql",
)


def _use_store(monkeypatch: pytest.MonkeyPatch, local: Path, store: ObjectStore) -> None:
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(local))
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_STORE", store.url("examples"))
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_CONN_ID", store.conn_id)


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_an_example_dag_runs_with_its_data_and_output_on_the_store(
    kind: str, airflow_db: None, local_examples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(kind)
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    _use_store(monkeypatch, local_examples, store)
    name, short, items = EXAMPLE_ON[kind]
    dag = load_dag_module(DAGS / f"{name}.py").dag
    dag_run = dag.test(run_conf={"data_dir": store.url("examples")})
    assert dag_run.state == "success", task_instances(dag_run)

    fs = store.fs()
    out = store.path("examples", "out", short, dag_run.run_id)
    summary = json.loads(fs.cat_file(f"{out}/_parallelrun/summary.json"))
    assert (summary["total_items"], summary["succeeded_items"], summary["failed_items"]) == (items, items, 0)
    assert summary["output"] == store.url("examples", "out", short, dag_run.run_id, "parallel_run_step.txt")
    lines = fs.cat_file(f"{out}/parallel_run_step.txt").decode().splitlines()
    assert len(lines) == items
    if kind == "s3":  # "<file name>: <digit>", every image once
        assert len({line.split(":")[0] for line in lines}) == items
    else:  # "<id> <prediction>", every row once, in input order
        assert [int(line.split()[0]) for line in lines] == list(range(items))
    # The inputs were read from the store, not from the local examples folder.
    report = fs.cat_file(f"{out}/_parallelrun/processed_mini_batches.csv").decode()
    assert store.url("examples", short) in report


def test_the_data_dir_param_takes_the_configured_store_folder_and_no_other_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(tmp_path / "examples"))
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_STORE", "s3://team-bucket/examples")
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_CONN_ID", "aws_default")

    def accepts(name: str, value: str) -> bool:
        param = load_dag_module(DAGS / f"{name}.py").dag.params.get_param("data_dir")
        try:
            param.resolve(value)
        except ParamValidationError:
            return False
        return True

    for name in ON_STORE_BY_PARAM:
        assert accepts(name, "s3://team-bucket/examples") and accepts(name, "s3://team-bucket/examples/run-2")
        assert accepts(name, str(tmp_path / "examples" / "a"))
        for outside in (
            "s3://team-bucket",
            "s3://team-bucket/examples-other",
            "s3://team-bucket/examples/../x",
            "s3://other-bucket/examples",
            "abfs://team-bucket/examples",
            "s3://team-bucket/examples/.hidden",
        ):
            assert not accepts(name, outside), (name, outside)
    # Without a store configured, no URL is taken.
    monkeypatch.delenv("PARALLELRUN_EXAMPLES_STORE")
    for name in ON_STORE_BY_PARAM:
        assert not accepts(name, "s3://team-bucket/examples"), name


@pytest.fixture
def s3_examples(s3_store: ObjectStore, local_examples: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    """The examples' store folder on S3, with the local examples folder shared by the tests."""
    _use_store(monkeypatch, local_examples, s3_store)
    return s3_store


@pytest.fixture
def azure_examples(
    azure_store: ObjectStore, local_examples: Path, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    """The examples' store folder on Azure Blob, with the local examples folder shared by the tests."""
    _use_store(monkeypatch, local_examples, azure_store)
    return azure_store


def _example(name: str) -> Any:
    return load_dag_module(DAGS / f"{name}.py")


def _drop_images(store: ObjectStore, folder: str, tmp_path: Path, count: int = 3) -> list[str]:
    """Put ``count`` digit images in ``<examples>/<folder>/batch/`` on the store; return their names."""
    from parallelrun_examples.data import make_digits_images

    images = make_digits_images(tmp_path / "drop", count=count)
    for image in images:
        store.put(f"examples/{folder}/batch/{image.name}", image.read_bytes())
    return [image.name for image in images]


def _lines(store: ObjectStore, *parts: str) -> list[str]:
    return store.fs().cat_file(store.path("examples", *parts, "parallel_run_step.txt")).decode().splitlines()


def _summary(store: ObjectStore, *parts: str) -> dict[str, Any]:
    return json.loads(store.fs().cat_file(store.path("examples", *parts, "_parallelrun", "summary.json")))


def test_the_sensor_example_claims_and_scores_new_images_on_the_store(
    airflow_db: None,
    s3_examples: ObjectStore,
    local_examples: Path,
    tmp_path: Path,
) -> None:
    """The images are new when the run starts: the sensor defers, its trigger reports them."""
    names = _drop_images(s3_examples, "incoming/sensor", tmp_path)
    dag_run = _example("parallelrun_sensor").dag.test(run_conf={"data_dir": s3_examples.url("examples")})
    assert dag_run.state == "success", task_instances(dag_run)

    assert [line.split(":")[0] for line in _lines(s3_examples, "out", "sensor", dag_run.run_id)] == names
    # Claimed on the store, by this run.
    ledger = ClaimLedger(
        default_state_path(s3_examples.url("examples", "incoming", "sensor")), s3_examples.fs()
    )
    for name in names:
        record = ledger.record(s3_examples.url("examples", "incoming", "sensor", "batch", name))
        assert record is not None and record["owner"].startswith(f"parallelrun_sensor/{dag_run.run_id}/")
    assert not (local_examples / "incoming").exists()


def test_the_nightly_example_scores_its_day_on_the_store_and_the_report_reads_the_output_there(
    airflow_db: None,
    azure_examples: ObjectStore,
    local_examples: Path,
    asset_triggered: Any,
) -> None:
    nightly, report = _example("parallelrun_nightly").dag, _example("parallelrun_report").dag
    # Scheduled runs take the default: the deployment's store folder.
    assert nightly.params["data_dir"] == azure_examples.url("examples")
    sync_dags_folder()
    unpause("parallelrun_report")

    scored = nightly.test(logical_date=at(2024, 3, 9, 2, 0))
    assert scored.state == "success", task_instances(scored)
    day = read_table(local_examples / "tabular" / "daily" / "2024-03-09")  # made locally, then uploaded
    expected = expected_lines(day, local_examples / "tabular" / "model.joblib")
    assert _lines(azure_examples, "out", "nightly", "2024-03-09") == expected
    processed = azure_examples.fs().cat_file(
        azure_examples.path(
            "examples", "out", "nightly", "2024-03-09", "_parallelrun", "processed_mini_batches.csv"
        )
    )
    assert azure_examples.url("examples", "tabular", "daily", "2024-03-09") in processed.decode()
    (event,) = asset_events("parallelrun_scores", scored.run_id)
    output = azure_examples.url("examples", "out", "nightly", "2024-03-09", "parallel_run_step.txt")
    assert event["extra"]["output"] == output

    # The report counts the rows of that output on the store, through the examples' Connection.
    asset_triggered([event["id"]])
    reported = report.test(logical_date=None)
    assert reported.state == "success", task_instances(reported)
    (report_file,) = new_reports(local_examples, set())
    (entry,) = json.loads(report_file.read_text())["runs"]
    assert (entry["output"], entry["output_rows"], entry["rows_match"]) == (output, len(expected), True)


def test_the_form_example_scores_the_folder_it_is_given_on_the_store(
    airflow_db: None,
    s3_examples: ObjectStore,
) -> None:
    conf = {
        "data_dir": s3_examples.url("examples"),
        "input_path": "digits/images/batch_3",
        "model_version": "v2",
    }
    dag_run = _example("parallelrun_form").dag.test(run_conf=conf)
    assert dag_run.state == "success", task_instances(dag_run)

    out = ("out", "form", "v2", dag_run.run_id)
    summary = _summary(s3_examples, *out)
    assert (summary["total_items"], summary["succeeded_items"]) == (297, 297)  # digits 1500 to 1796
    assert summary["output"] == s3_examples.url("examples", *out, "parallel_run_step.csv")
    header, *rows = (
        s3_examples.fs()
        .cat_file(s3_examples.path("examples", *out, "parallel_run_step.csv"))
        .decode()
        .splitlines()
    )
    assert len(rows) == 297 and all("v2" in row for row in rows), header
    processed = s3_examples.fs().cat_file(
        s3_examples.path("examples", *out, "_parallelrun", "processed_mini_batches.csv")
    )
    assert s3_examples.url("examples", "digits", "images", "batch_3") in processed.decode()


def test_the_asset_or_time_example_rescores_the_reference_table_on_the_store(
    airflow_db: None, azure_examples: ObjectStore
) -> None:
    dag_run = _example("parallelrun_asset_or_time").dag.test()  # the default data_dir: the store
    assert dag_run.state == "success", task_instances(dag_run)

    lines = _lines(azure_examples, "out", "rescore", dag_run.run_id)
    assert [int(line.split()[0]) for line in lines] == list(range(3000))
    assert azure_examples.fs().find(azure_examples.path("examples", "tabular", "reference"))


def test_the_sql_example_writes_its_summary_to_the_store(
    airflow_db: None,
    s3_examples: ObjectStore,
    local_examples: Path,
) -> None:
    """The customers table is the examples' SQLite database; the run's own files go to the store."""
    dag_run = _example("parallelrun_sql").dag.test(logical_date=at(2024, 6, 1, 3, 0))
    assert dag_run.state == "success", task_instances(dag_run)

    summary = _summary(s3_examples, "out", "sql", dag_run.run_id)
    assert (summary["total_items"], summary["succeeded_items"], summary["failed_items"]) == (10000, 10000, 0)
    assert not (local_examples / "out" / "sql").exists()


def test_the_event_driven_example_watches_the_store_and_scores_what_its_trigger_claimed(
    airflow_db: None,
    azure_examples: ObjectStore,
    tmp_path: Path,
    asset_triggered: Any,
) -> None:
    from airflow.assets.manager import AssetManager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session

    module = _example("parallelrun_event_driven")
    (watcher,) = module.incoming_images.watchers
    trigger = watcher.trigger
    assert (trigger.path, trigger.conn_id) == (
        azure_examples.url("examples", "incoming", "events"),
        azure_examples.conn_id,
    )
    names = _drop_images(azure_examples, "incoming/events", tmp_path)

    fired = asyncio.run(_next_event(trigger, timeout=HANG))
    assert fired is not None
    incoming = [azure_examples.url("examples", "incoming", "events", "batch", name) for name in names]
    assert fired.payload["files"] == incoming
    # Recorded as the triggerer records a watcher's event; the scheduler would start this run on it.
    sync_dags_folder()
    with create_session() as session:
        asset = session.query(AssetModel).filter(AssetModel.name == "parallelrun_incoming_images").one()
        event = AssetManager.register_asset_change(
            asset=asset.to_serialized(),
            extra={"from_trigger": True, "payload": fired.payload},
            session=session,
        )
        session.commit()
        assert event is not None
        event_id = event.id
    asset_triggered([event_id])
    dag_run = module.dag.test(logical_date=None)
    assert dag_run.state == "success", task_instances(dag_run)

    assert [line.split(":")[0] for line in _lines(azure_examples, "out", "events", dag_run.run_id)] == names


def test_a_day_delivered_on_the_store_is_left_as_it_is_and_a_missing_one_is_uploaded(
    s3_examples: ObjectStore, tmp_path: Path
) -> None:
    """What the nightly example's ``materialise_day`` does with the day's folder on the store."""
    from parallelrun_examples.on_store import publish

    made = tmp_path / "made"
    made.mkdir()
    (made / "part-000.csv").write_text("id\n1\n")
    delivered = s3_examples.put("examples/tabular/daily/2024-03-10/export.csv", b"id\n7\n")
    data_dir = s3_examples.url("examples")

    day = publish(data_dir, made, "tabular/daily/2024-03-10", unless_delivered=True)
    assert day == s3_examples.url("examples", "tabular", "daily", "2024-03-10")
    assert s3_examples.fs().find(s3_examples.path("examples", "tabular", "daily", "2024-03-10")) == [
        delivered.split("://", 1)[1]
    ]
    publish(data_dir, made, "tabular/daily/2024-03-11", unless_delivered=True)
    assert s3_examples.fs().cat_file(
        s3_examples.path("examples", "tabular", "daily", "2024-03-11", "part-000.csv")
    )
