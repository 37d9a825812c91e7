"""The scheduled and form example DAGs: their schedules as the scheduler sees them, and whole runs.

Each DAG is loaded from ``dags/`` with ``PARALLELRUN_EXAMPLES_DIR`` set to the test's folder (the
DAGs read it when parsed) and run with ``dag.test()``. The report and asset-or-time DAGs are run as
the scheduler runs them when an asset event arrives: an ``ASSET_TRIGGERED`` run that has consumed
the real event of an earlier run (``dag.test()`` alone makes a manual run that consumed nothing).
"""

from __future__ import annotations

import csv
import datetime as dt
import doctest
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.airflow.conftest import load_dag_module
from tests.conftest import DAGS

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

UTC = dt.UTC
FEATURES = ["f0", "f1", "f2", "f3"]


def at(*fields: int) -> dt.datetime:
    return dt.datetime(*fields, tzinfo=UTC)


# -- helpers ----------------------------------------------------------------------------------


def load_example(name: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import ``dags/<name>.py`` with its data under ``data_dir`` and return its ``dag``."""
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(data_dir))
    return load_dag_module(DAGS / f"{name}.py").dag


def as_scheduled(dag: Any) -> Any:
    """Return the DAG as the scheduler reads it: serialized and deserialized."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))


def next_run(dag: Any, after: dt.datetime) -> dt.datetime:
    """Return when the scheduler starts the DAG's next timed run after a run that ended at ``after``."""
    from airflow.timetables.base import DataInterval, TimeRestriction

    info = as_scheduled(dag).timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(after, after),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    return info.run_after


def scheduled_on(dag: Any) -> set[str]:
    """Return the names of the assets the scheduler starts the DAG on."""
    return {key.name for key, _ in as_scheduled(dag).timetable.asset_condition.iter_assets()}


def sync_dags_folder() -> None:
    """Write every DAG of ``dags/`` to the metadata DB, as the DAG processor does (dag.test() does it too)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    bundle = manager.get_bundle("dags-folder")
    bundle.initialize()
    bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
    sync_bag_to_db(bag, bundle.name, bundle.version)


def unpause(dag_id: str) -> None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagModel).filter(DagModel.dag_id == dag_id).update({"is_paused": False})


def asset_events(asset_name: str, source_run_id: str) -> list[dict[str, Any]]:
    """Return the events of ``asset_name`` emitted by the run ``source_run_id``."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == asset_name, AssetEvent.source_run_id == source_run_id)
            .all()
        )
        return [
            {"id": r.id, "extra": dict(r.extra), "dag_id": r.source_dag_id, "run_id": r.source_run_id}
            for r in rows
        ]


def queued_assets(dag_id: str) -> set[str]:
    """Return the assets whose events wait in the scheduler's queue to start a run of ``dag_id``."""
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetModel.name)
            .join(AssetDagRunQueue, AssetDagRunQueue.asset_id == AssetModel.id)
            .filter(AssetDagRunQueue.target_dag_id == dag_id)
            .all()
        )
        return {name for (name,) in rows}


@pytest.fixture
def asset_triggered(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Make the next ``dag.test()`` run an asset-triggered run that consumed the given asset events.

    ``dag.test()`` creates its run with ``get_or_create_dagrun``; this creates it instead as the
    scheduler does for a DAG whose assets were updated (``_create_dag_runs_asset_triggered``): no
    logical date, run type ``asset_triggered``, the events in ``consumed_asset_events``. Tasks then
    get them as ``triggering_asset_events``. The scheduler's queue rows for the DAG are removed,
    as the scheduler removes them when it creates the run.
    """
    from airflow.models.asset import AssetDagRunQueue, AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    def use(event_ids: list[int]) -> None:
        def create(*, dag: Any, run_after: dt.datetime, conf: Any, start_date: Any, session: Any, **_: Any):
            run = dag.create_dagrun(
                run_id=DagRun.generate_run_id(
                    run_type=DagRunType.ASSET_TRIGGERED, logical_date=None, run_after=run_after
                ),
                logical_date=None,
                data_interval=None,
                run_after=run_after,
                conf=conf,
                run_type=DagRunType.ASSET_TRIGGERED,
                triggered_by=DagRunTriggeredByType.ASSET,
                state=DagRunState.RUNNING,
                start_date=start_date,
                session=session,
            )
            events = session.query(AssetEvent).filter(AssetEvent.id.in_(event_ids)).all()
            assert len(events) == len(event_ids)
            run.consumed_asset_events.extend(events)
            session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == dag.dag_id).delete()
            session.commit()
            return run

        monkeypatch.setattr("airflow.models.dagrun.get_or_create_dagrun", create)

    yield use


def seed_day(data_dir: Path, day: str, first_id: int, rows: int) -> pd.DataFrame:
    """Deliver a day's table (ids from ``first_id``) as an upstream export would; return its rows."""
    from parallelrun_examples.data import make_tabular_table

    folder = data_dir / "tabular" / "daily" / day
    for part in make_tabular_table(folder, rows=rows, files=2):
        frame = pd.read_csv(part)
        frame["id"] += first_id
        frame.to_csv(part, index=False)
    return read_table(folder)


def read_table(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(folder.glob("*.csv"), key=str)], ignore_index=True)


def expected_lines(table: pd.DataFrame, model_path: Path) -> list[str]:
    """Return the merged output the tabular entry script should write: ``id prediction`` in input order."""
    predicted = joblib.load(model_path).predict(table[FEATURES])
    return [f"{i} {int(p)}" for i, p in zip(table["id"], predicted, strict=True)]


def summary_of(output_file: Path) -> dict[str, Any]:
    return json.loads((output_file.parent / "_parallelrun" / "summary.json").read_text())


def counts(mapping: dict[str, Any]) -> tuple[int, ...]:
    from parallelrun_examples.report import COUNT_KEYS

    return tuple(mapping[key] for key in COUNT_KEYS)


def new_reports(data_dir: Path, seen: set[Path]) -> list[Path]:
    """Return the JSON reports written since the last call with ``seen``."""
    found = set((data_dir / "reports").glob("*.json")) - seen
    seen.update(found)
    return sorted(found)


def rows_per_file(data_dir: Path) -> list[int]:
    return [len(pd.read_csv(p)) for p in sorted((data_dir / "tabular" / "reference").glob("*.csv"))]


# -- loading and schedules --------------------------------------------------------------------


def test_the_example_helpers_doctests_pass() -> None:
    from parallelrun_examples import daily, report

    for module in (daily, report):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__


EXAMPLES = (
    "parallelrun_nightly",
    "parallelrun_report",
    "parallelrun_form",
    "parallelrun_asset_or_time",
    "parallelrun_retrain",
    "parallelrun_sql",
)

PARSE_PROBE = """
import importlib.util, json, sys, time
found = {}
for path in sys.argv[1:]:
    started = time.process_time()  # CPU time: what parsing costs, however busy the machine
    spec = importlib.util.spec_from_file_location("probe_" + path.rsplit("/", 1)[-1][:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found[module.dag.dag_id] = time.process_time() - started
heavy = sorted(m for m in ("sklearn", "pandas", "numpy", "joblib", "PIL", "pyarrow") if m in sys.modules)
print(json.dumps({"seconds": found, "heavy": heavy}))
"""


def test_every_scheduled_example_parses_fast_without_heavy_imports(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PARALLELRUN_EXAMPLES_DIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join([str(DAGS), str(DAGS.parent), env.get("PYTHONPATH", "")])
    # airflow.sdk first, so the timings are the DAG files' own.
    probe = "import airflow.sdk, airflow_parallelrun.operators.parallel_run\n" + PARSE_PROBE
    result = subprocess.run(
        [sys.executable, "-c", probe, *(str(DAGS / f"{name}.py") for name in EXAMPLES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(parsed["seconds"]) == set(EXAMPLES)
    assert max(parsed["seconds"].values()) < 1, parsed["seconds"]
    # Heavy libraries are imported by the tasks when they run, never when the files are parsed.
    assert parsed["heavy"] == []


def test_every_scheduled_example_is_tagged_and_documented(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in EXAMPLES:
        dag = load_example(name, tmp_path, monkeypatch)
        assert dag.dag_id == name
        assert set(dag.tags) == {"parallelrun", "example"}
        assert dag.doc_md and dag.doc_md.strip()


def test_nightly_runs_at_two_utc_every_day_without_catching_up(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parallelrun_examples.timetables import CronTriggerTimetable

    dag = load_example("parallelrun_nightly", tmp_path, monkeypatch)
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.catchup is False
    assert next_run(dag, at(2024, 6, 1, 2, 0)) == at(2024, 6, 2, 2, 0)
    assert next_run(dag, at(2024, 6, 1, 13, 7)) == at(2024, 6, 2, 2, 0)
    # The day's folder: the logical date's day, or, for a manual run without one, the day it ran.
    path = dag.get_task("score.partition").input_path
    render = dag.get_template_env().from_string(path).render
    scheduled = SimpleNamespace(logical_date=at(2024, 3, 5, 2, 0), run_after=at(2024, 3, 5, 2, 0, 3))
    manual = SimpleNamespace(logical_date=None, run_after=at(2024, 3, 9, 23, 59))
    params = {"data_dir": dag.params["data_dir"]}  # a scheduled run's: the default, the examples folder
    assert render(dag_run=scheduled, params=params) == str(tmp_path / "tabular" / "daily" / "2024-03-05")
    assert render(dag_run=manual, params=params) == str(tmp_path / "tabular" / "daily" / "2024-03-09")
    # What it emits is what the report DAG is scheduled on.
    (outlet,) = dag.get_task("score.aggregate").outlets
    report = load_example("parallelrun_report", tmp_path, monkeypatch)
    assert scheduled_on(report) == {outlet.name}
    assert as_scheduled(report).timetable.summary == "Asset"


def test_asset_or_time_runs_on_a_model_event_or_at_three_utc(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parallelrun_examples.timetables import AssetOrTimeSchedule, CronTriggerTimetable

    dag = load_example("parallelrun_asset_or_time", tmp_path, monkeypatch)
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert isinstance(dag.timetable.timetable, CronTriggerTimetable)
    (model_asset,) = load_example("parallelrun_retrain", tmp_path, monkeypatch).get_task("retrain").outlets
    assert scheduled_on(dag) == {model_asset.name}
    scheduled = as_scheduled(dag).timetable
    assert scheduled.summary.startswith("Asset or ")
    assert next_run(dag, at(2024, 6, 1, 3, 0)) == at(2024, 6, 2, 3, 0)
    assert next_run(dag, at(2024, 6, 1, 1, 0)) == at(2024, 6, 1, 3, 0)
    (outlet,) = dag.get_task("score.aggregate").outlets
    assert outlet.name == "parallelrun_scores"


def test_form_is_manual_and_its_params_carry_titles_enums_and_validation(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.timetables.simple import NullTimetable

    dag = load_example("parallelrun_form", tmp_path, monkeypatch)
    assert isinstance(as_scheduled(dag).timetable, NullTimetable)
    params = {name: dag.params.get_param(name) for name in dag.params}
    assert set(params) == {"data_dir", "input_path", "model_version", "mini_batch_size", "error_threshold"}
    assert all(p.schema.get("title") and p.description for p in params.values())
    schemas = {name: p.schema for name, p in params.items()}
    assert schemas["model_version"]["enum"] == ["v1", "v2"]
    assert schemas["error_threshold"] == {**schemas["error_threshold"], "type": "integer", "minimum": -1}


@pytest.mark.parametrize(
    ("conf", "param", "says"),
    [
        ({"error_threshold": -5}, "error_threshold", "less than the minimum of -1"),
        ({"error_threshold": "3"}, "error_threshold", "is not of type 'integer'"),
        ({"mini_batch_size": "ten"}, "mini_batch_size", "does not match"),
        ({"mini_batch_size": "0"}, "mini_batch_size", "does not match"),
        ({"model_version": "v9"}, "model_version", "is not one of ['v1', 'v2']"),
        ({"input_path": "/etc"}, "input_path", "does not match"),
        ({"input_path": "digits/../../etc"}, "input_path", "does not match"),
        ({"input_path": ""}, "input_path", "should be non-empty"),
        ({"data_dir": "/etc"}, "data_dir", "does not match"),
    ],
)
def test_form_refuses_a_bad_value_naming_the_param(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conf: dict, param: str, says: str
) -> None:
    # The same check the REST API makes before it creates a run (the real-scheduler test calls it).
    params = as_scheduled(load_example("parallelrun_form", tmp_path, monkeypatch)).params
    with pytest.raises(ValueError, match=f"Invalid input for param {param}:") as raised:
        params.deep_merge(conf).validate()
    assert says in str(raised.value)


# -- runs -------------------------------------------------------------------------------------


def test_nightly_scores_the_folder_of_the_logical_date_it_is_given(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = load_example("parallelrun_nightly", tmp_path, monkeypatch)
    day_table = seed_day(tmp_path, "2024-03-05", first_id=50_000, rows=600)
    seed_day(tmp_path, "2024-03-04", first_id=40_000, rows=300)  # the day before: not this run's
    delivered = {p: p.read_bytes() for p in (tmp_path / "tabular" / "daily" / "2024-03-05").glob("*.csv")}

    dag_run = dag.test(logical_date=at(2024, 3, 5, 2, 0))
    assert dag_run.state == "success"

    output = tmp_path / "out" / "nightly" / "2024-03-05" / "parallel_run_step.txt"
    assert output.read_text().splitlines() == expected_lines(day_table, tmp_path / "tabular" / "model.joblib")
    # A delivered day is scored as it is: the example data is made only for a day with no files.
    assert {p: p.read_bytes() for p in delivered} == delivered
    summary = summary_of(output)
    assert summary["succeeded_items"] == summary["total_items"] == len(day_table)
    (event,) = asset_events("parallelrun_scores", dag_run.run_id)
    assert event["extra"]["output"] == str(output)
    assert counts(event["extra"]) == counts(summary)


def test_report_reads_the_scores_event_of_a_nightly_run_and_checks_its_output(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asset_triggered: Any
) -> None:
    nightly = load_example("parallelrun_nightly", tmp_path, monkeypatch)
    report = load_example("parallelrun_report", tmp_path, monkeypatch)
    sync_dags_folder()
    unpause("parallelrun_report")

    # No file for this day: the nightly DAG makes the example day, scores it and emits its event.
    scored = nightly.test(logical_date=at(2024, 3, 9, 2, 0))
    assert scored.state == "success"
    day = read_table(tmp_path / "tabular" / "daily" / "2024-03-09")
    output = tmp_path / "out" / "nightly" / "2024-03-09" / "parallel_run_step.txt"
    assert output.read_text().splitlines() == expected_lines(day, tmp_path / "tabular" / "model.joblib")
    (event,) = asset_events("parallelrun_scores", scored.run_id)
    # The scheduler would now start the report: the event waits in its queue.
    assert "parallelrun_scores" in queued_assets("parallelrun_report")

    seen: set[Path] = set()
    asset_triggered([event["id"]])
    reported = report.test(logical_date=None)
    assert reported.state == "success"
    assert reported.run_type == "asset_triggered"
    (report_file,) = new_reports(tmp_path, seen)
    written = json.loads(report_file.read_text())
    (entry,) = written["runs"]
    assert entry["source"] == f"parallelrun_nightly/{scored.run_id}"
    assert entry["run_id"] == scored.run_id
    assert entry["output"] == str(output)
    assert counts(entry) == counts(event["extra"]) == counts(summary_of(output))
    assert entry["output_rows"] == len(output.read_text().splitlines()) == len(day)
    assert entry["succeeded_items"] == len(day)
    assert entry["rows_match"] is True
    markdown = report_file.with_suffix(".md").read_text()
    assert f"parallelrun_nightly/{scored.run_id}" in markdown and str(output) in markdown

    # An output that lost rows after its run counted them fails the report, which says so.
    output.write_text("".join(output.read_text().splitlines(keepends=True)[:-3]))
    asset_triggered([event["id"]])
    mismatch = report.test(logical_date=None)
    assert mismatch.state == "failed"
    (report_file,) = new_reports(tmp_path, seen)
    (entry,) = json.loads(report_file.read_text())["runs"]
    assert (entry["output_rows"], entry["succeeded_items"]) == (len(day) - 3, len(day))
    assert entry["rows_match"] is False


def test_a_new_model_event_starts_a_rescore_of_the_reference_table(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asset_triggered: Any
) -> None:
    retrain = load_example("parallelrun_retrain", tmp_path, monkeypatch)
    rescore = load_example("parallelrun_asset_or_time", tmp_path, monkeypatch)
    sync_dags_folder()
    unpause("parallelrun_asset_or_time")

    trained = retrain.test()
    assert trained.state == "success"
    model = tmp_path / "tabular" / "model.joblib"
    (model_event,) = asset_events("parallelrun_tabular_model", trained.run_id)
    assert model_event["extra"] == {
        "model_path": str(model),
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
    }
    assert "parallelrun_tabular_model" in queued_assets("parallelrun_asset_or_time")

    asset_triggered([model_event["id"]])
    dag_run = rescore.test(logical_date=None)
    assert dag_run.state == "success" and dag_run.run_type == "asset_triggered"
    table = read_table(tmp_path / "tabular" / "reference")
    output = tmp_path / "out" / "rescore" / dag_run.run_id / "parallel_run_step.txt"
    assert output.read_text().splitlines() == expected_lines(table, model)
    summary = summary_of(output)
    # 1,000-row mini-batches over two files of 1,500 rows: 1,000 + 500 in each.
    assert summary["total_mini_batches"] == sum(-(-n // 1000) for n in rows_per_file(tmp_path))
    (scores_event,) = asset_events("parallelrun_scores", dag_run.run_id)
    assert counts(scores_event["extra"]) == counts(summary)
    assert summary["succeeded_items"] == len(table)


def test_form_run_scores_the_folder_and_model_version_of_its_conf(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parallelrun_examples.data import digits_features, make_digits_images

    dag = load_example("parallelrun_form", tmp_path, monkeypatch)
    images = make_digits_images(tmp_path / "uploads" / "2024-06-01", count=120)
    # Not the Params' defaults: the run must partition and count by what its form asked for.
    conf = {
        "input_path": "uploads/2024-06-01",
        "model_version": "v2",
        "mini_batch_size": "30",
        "error_threshold": 5,
    }
    assert (dag.params["mini_batch_size"], dag.params["error_threshold"]) != ("30", 5)
    dag_run = dag.test(run_conf=conf)
    assert dag_run.state == "success"

    out = tmp_path / "out" / "form" / "v2" / dag_run.run_id / "parallel_run_step.csv"
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    model = joblib.load(tmp_path / "digits" / "models" / "v2.joblib")
    predicted = model.predict(np.stack([digits_features(p) for p in images]))
    assert rows == [
        {"file": p.name, "digit": str(int(d)), "model_version": "v2"}
        for p, d in zip(images, predicted, strict=True)
    ]
    assert not (tmp_path / "out" / "form" / "v1").exists()
    summary = summary_of(out)
    assert summary["total_mini_batches"] == -(-len(images) // 30)
    assert summary["thresholds"]["error_threshold"] == 5
