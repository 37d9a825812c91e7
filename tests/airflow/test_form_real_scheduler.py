"""The form example under a real Airflow, driven through the REST API as the UI's trigger form drives it.

The UI builds its form from ``GET /api/v2/dags/{dag_id}/details`` (``params``: each value, its
description and JSON schema) and triggers with ``POST /api/v2/dags/{dag_id}/dagRuns`` carrying the
form's values as ``conf`` and no logical date. The api-server checks the conf against the Params
before it creates the run; the scheduler then runs it with the LocalExecutor.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from tests.airflow.real_airflow import RealAirflow, real_airflow  # noqa: F401
from tests.conftest import DAGS

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(900)]

DAG_ID = "parallelrun_form"


@pytest.fixture(scope="module")
def form_airflow(real_airflow: RealAirflow) -> RealAirflow:  # noqa: F811
    """The real Airflow with the form DAG deployed as a user would: the DAG file and its scripts folder."""
    shutil.copytree(DAGS / "scripts", real_airflow.dags_folder / "scripts", dirs_exist_ok=True)
    real_airflow.add_dag(DAG_ID, (DAGS / f"{DAG_ID}.py").read_text())
    real_airflow.wait_for_dag(DAG_ID)
    return real_airflow


def examples_dir(airflow: RealAirflow) -> Path:
    return Path(airflow.env["PARALLELRUN_EXAMPLES_DIR"])


def run_count(airflow: RealAirflow) -> int:
    return int(airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["total_entries"])


def test_the_form_fields_are_served_with_titles_descriptions_and_schemas(form_airflow: RealAirflow) -> None:
    params: dict[str, Any] = form_airflow.api("GET", f"/api/v2/dags/{DAG_ID}/details").json()["params"]
    assert set(params) == {"data_dir", "input_path", "model_version", "mini_batch_size", "error_threshold"}
    for name, param in params.items():
        assert param["schema"].get("title"), name
        assert param["description"], name
    assert params["model_version"]["schema"]["enum"] == ["v1", "v2"]
    assert set(params["model_version"]["schema"]["values_display"]) == {"v1", "v2"}
    assert params["error_threshold"]["schema"]["type"] == "integer"
    assert params["error_threshold"]["schema"]["minimum"] == -1
    assert params["mini_batch_size"]["schema"]["pattern"]
    assert params["input_path"]["schema"]["minLength"] == 1 and params["input_path"]["schema"]["pattern"]


@pytest.mark.parametrize(
    ("conf", "param", "reason"),
    [
        ({"error_threshold": -5}, "error_threshold", "-5 is less than the minimum of -1"),
        ({"mini_batch_size": "ten"}, "mini_batch_size", "'ten' does not match"),
        ({"model_version": "v9"}, "model_version", "'v9' is not one of ['v1', 'v2']"),
        ({"input_path": "/etc/passwd"}, "input_path", "'/etc/passwd' does not match"),
    ],
)
def test_a_bad_value_is_refused_with_a_message_naming_the_param(
    form_airflow: RealAirflow, conf: dict[str, Any], param: str, reason: str
) -> None:
    form_airflow.unpause(DAG_ID)
    before = run_count(form_airflow)
    response = form_airflow.api(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": conf},
        expect=(400,),
    )
    detail = response.json()["detail"]
    assert detail.startswith(f"Invalid input for param {param}: ")
    assert reason in detail
    assert run_count(form_airflow) == before  # refused before any run exists


def test_a_run_triggered_with_a_conf_scores_that_folder_with_that_model(form_airflow: RealAirflow) -> None:
    from parallelrun_examples.data import digits_features, make_digits_images

    data = examples_dir(form_airflow)
    images = make_digits_images(data / "uploads" / "form-test", count=60)
    conf = {"input_path": "uploads/form-test", "model_version": "v2"}
    run_id = form_airflow.trigger(DAG_ID, conf=conf)
    state = form_airflow.wait_for_run(DAG_ID, run_id, timeout=600)
    tasks = {(t["task_id"], t["map_index"]): t["state"] for t in form_airflow.task_instances(DAG_ID, run_id)}
    assert state == "success", tasks
    run = form_airflow.dag_run(DAG_ID, run_id)
    assert run["logical_date"] is None and run["conf"] == conf

    out = data / "out" / "form" / "v2" / run_id / "parallel_run_step.csv"
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    model = joblib.load(data / "digits" / "models" / "v2.joblib")
    predicted = model.predict(np.stack([digits_features(p) for p in images]))
    assert rows == [
        {"file": p.name, "digit": str(int(d)), "model_version": "v2"}
        for p, d in zip(images, predicted, strict=True)
    ]
    mapped = [key for key in tasks if key[0] == "score.run"]
    defaults = form_airflow.api("GET", f"/api/v2/dags/{DAG_ID}/details").json()["params"]
    assert len(mapped) == -(-len(images) // int(defaults["mini_batch_size"]["value"]))
