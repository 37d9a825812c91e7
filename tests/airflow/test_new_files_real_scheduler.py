"""The new-files examples under a real scheduler and triggerer: files dropped in a folder are scored once.

The example DAG files ``parallelrun_event_driven.py`` and ``parallelrun_sensor.py`` (with the
digits entry script) run unchanged on a temporary Airflow whose ``PARALLELRUN_EXAMPLES_DIR`` is
the test's own. The event-driven DAG is started by its AssetWatcher's ``NewFilesTrigger`` in
the triggerer; the sensor DAG is triggered once through the REST API and its sensor defers to
the triggerer.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.real_airflow import RealAirflow, running_airflow
from tests.conftest import DAGS

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(1800)]

EVENT_DAG = "parallelrun_event_driven"
SENSOR_DAG = "parallelrun_sensor"
#: Longer than the examples' poke interval plus settle period: time for a second event to show.
QUIET = 15


@pytest.fixture(scope="module")
def airflow_with_examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAirflow]:
    home = tmp_path_factory.mktemp("real-airflow-new-files")
    (home / "dags" / "scripts").mkdir(parents=True)
    shutil.copy(DAGS / "scripts" / "digits_score.py", home / "dags" / "scripts" / "digits_score.py")
    for airflow in running_airflow(home):
        for name in (EVENT_DAG, SENSOR_DAG):
            airflow.add_dag(name, (DAGS / f"{name}.py").read_text())
        yield airflow


def _examples(airflow: RealAirflow) -> Path:
    return Path(airflow.env["PARALLELRUN_EXAMPLES_DIR"])


def _drop(folder: Path, source: Path, names: list[str]) -> list[str]:
    """Put copies of digit images into ``folder``, each appearing whole (written aside, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = sorted(source.glob("**/*.png"))
    for i, name in enumerate(names):
        partial = folder / f".{name}.partial"
        shutil.copyfile(images[i % len(images)], partial)
        os.replace(partial, folder / name)
    return sorted(names)


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from parallelrun_examples.data import make_digits_images

    folder = tmp_path_factory.mktemp("digit-images")
    make_digits_images(folder, count=10)
    return folder


def _runs(airflow: RealAirflow, dag_id: str) -> list[dict]:
    body = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "run_after"}).json()
    return list(body["dag_runs"])


def _wait_for_runs(airflow: RealAirflow, dag_id: str, count: int, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        airflow.check_alive()
        runs = _runs(airflow, dag_id)
        if len(runs) >= count:
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{dag_id} has {len(runs)} run(s), not {count}, after {timeout:g}s\n{airflow.describe()}"
            )
        time.sleep(1)


def _scored(examples: Path, kind: str, run_id: str) -> list[str]:
    """Return the file names a run scored, from its merged ``"<file name>: <digit>"`` lines."""
    merged = examples / "out" / kind / run_id / "parallel_run_step.txt"
    return [line.split(":")[0] for line in merged.read_text().splitlines()]


def test_files_dropped_in_the_watched_folder_start_one_run_that_scores_exactly_them(
    airflow_with_examples: RealAirflow, digit_images: Path
) -> None:
    airflow = airflow_with_examples
    airflow.wait_for_dag(EVENT_DAG)
    airflow.unpause(EVENT_DAG)
    incoming = _examples(airflow) / "incoming" / "events"

    first = _drop(incoming, digit_images, ["scan_a1.png", "scan_a2.png", "scan_a3.png"])
    (run,) = _wait_for_runs(airflow, EVENT_DAG, 1)
    assert airflow.wait_for_run(EVENT_DAG, run["dag_run_id"], timeout=600) == "success"
    assert _scored(_examples(airflow), "events", run["dag_run_id"]) == first
    time.sleep(QUIET)
    assert len(_runs(airflow, EVENT_DAG)) == 1  # the files stay in the folder, yet fire no more

    second = _drop(incoming, digit_images, ["scan_b1.png", "scan_b2.png"])
    runs = _wait_for_runs(airflow, EVENT_DAG, 2)
    new = [r for r in runs if r["dag_run_id"] != run["dag_run_id"]]
    assert len(new) == 1
    assert airflow.wait_for_run(EVENT_DAG, new[0]["dag_run_id"], timeout=600) == "success"
    assert _scored(_examples(airflow), "events", new[0]["dag_run_id"]) == second
    time.sleep(QUIET)
    assert len(_runs(airflow, EVENT_DAG)) == 2


def test_the_sensor_dag_triggered_once_scores_exactly_the_dropped_files(
    airflow_with_examples: RealAirflow, digit_images: Path
) -> None:
    airflow = airflow_with_examples
    airflow.wait_for_dag(SENSOR_DAG)
    incoming = _examples(airflow) / "incoming" / "sensor"
    dropped = _drop(incoming, digit_images, [f"photo_{i}.png" for i in range(4)])
    run_id = airflow.trigger(SENSOR_DAG)
    assert airflow.wait_for_run(SENSOR_DAG, run_id, timeout=600) == "success"
    assert _scored(_examples(airflow), "sensor", run_id) == dropped
    states = {
        t["task_id"]: t["state"] for t in airflow.task_instances(SENSOR_DAG, run_id) if t["map_index"] < 1
    }
    assert states["wait_for_images"] == "success" and states["score.aggregate"] == "success"
