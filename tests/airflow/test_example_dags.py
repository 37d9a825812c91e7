"""The example DAGs, run whole with ``dag.test()`` on SQLite, their merged outputs checked row by row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.airflow.airflow_versions import dag_bag
from tests.airflow.conftest import load_dag_module, task_instances
from tests.conftest import DAGS

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _run_folder(data_dir: Path, name: str, run_id: str) -> Path:
    return data_dir / "out" / name / run_id


def test_every_dag_file_in_dags_imports_cleanly(airflow_db: None) -> None:
    bag = dag_bag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert {"parallelrun_digits", "parallelrun_tabular"} <= set(bag.dag_ids)


def test_digits_example_classifies_every_image_in_order(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(tmp_path))  # data_dir must be under it
    dag = load_dag_module(DAGS / "parallelrun_digits.py").dag
    dag_run = dag.test(run_conf={"data_dir": str(tmp_path)})
    assert dag_run.state == "success"

    from parallelrun_examples.data import digits_features

    images = sorted((tmp_path / "digits" / "images").glob("**/*.png"), key=str)
    assert len(images) == 1797
    model = joblib.load(tmp_path / "digits" / "model.joblib")
    predicted = model.predict(np.stack([digits_features(p) for p in images]))
    expected = [f"{p.name}: {int(d)}" for p, d in zip(images, predicted, strict=True)]

    out = _run_folder(tmp_path, "digits", dag_run.run_id)
    assert (out / "parallel_run_step.txt").read_text().splitlines() == expected

    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert (
        summary["total_mini_batches"],
        summary["succeeded_mini_batches"],
        summary["failed_mini_batches"],
    ) == (18, 18, 0)
    assert (summary["total_items"], summary["succeeded_items"], summary["failed_items"]) == (1797, 1797, 0)
    assert summary["output"] == str(out / "parallel_run_step.txt")
    assert summary["thresholds"] == {
        "error_threshold": 0,
        "allowed_failed_count": None,
        "allowed_failed_percent": None,
    }

    with open(out / "_parallelrun" / "processed_mini_batches.csv") as f:
        report = list(csv.DictReader(f))
    assert [r["id"] for r in report] == [f"mb-{i:06d}" for i in range(18)]
    assert {r["status"] for r in report} == {"succeeded"}
    assert sum(int(r["items_succeeded"]) for r in report) == 1797
    assert report[0]["inputs"].split(";") == [str(p) for p in images[:100]]

    tis = task_instances(dag_run)
    runs = {i: v for (task, i), v in tis.items() if task == "score.run"}
    # mini_batches_per_task="auto": 18 mini-batches > 4 per process x 2 processes, so 8 task
    # instances: the first two run three mini-batches each, the others two.
    assert len(runs) == 8 and {state for state, _ in runs.values()} == {"success"}
    assert runs[0][1] == "mb-000000..mb-000002 (3 mini-batches) 300 files digit_0000.png .. digit_0299.png"
    assert runs[2][1] == "mb-000006..mb-000007 (2 mini-batches) 200 files digit_0600.png .. digit_0799.png"


def test_tabular_example_scores_every_row_in_input_order(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(tmp_path))  # data_dir must be under it
    dag = load_dag_module(DAGS / "parallelrun_tabular.py").dag
    dag_run = dag.test(run_conf={"data_dir": str(tmp_path)})
    assert dag_run.state == "success"

    parts = sorted((tmp_path / "tabular" / "input").glob("*.csv"), key=str)
    table = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    model = joblib.load(tmp_path / "tabular" / "model.joblib")
    predicted = model.predict(table[["f0", "f1", "f2", "f3"]])
    expected = [f"{i} {int(p)}" for i, p in zip(table["id"], predicted, strict=True)]

    out = _run_folder(tmp_path, "tabular", dag_run.run_id)
    assert (out / "parallel_run_step.txt").read_text().splitlines() == expected

    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["total_items"] == summary["succeeded_items"] == len(table) == 20000
    # 64KB mini-batches over three ~200KB files: each file is split, none crosses a file boundary.
    assert summary["total_mini_batches"] > len(parts)
    with open(out / "_parallelrun" / "processed_mini_batches.csv") as f:
        report = list(csv.DictReader(f))
    for row in report:
        (piece,) = row["inputs"].split(";")
        assert "[bytes=" in piece


@pytest.mark.parametrize("name", ["parallelrun_digits", "parallelrun_tabular", "parallelrun_sensor"])
def test_the_data_dir_param_only_takes_the_examples_folder_or_a_folder_under_it(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    examples = tmp_path / "examples"
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(examples))
    dag = load_dag_module(DAGS / f"{name}.py").dag
    param = dag.params.get_param("data_dir")

    def accepts(value: str) -> bool:
        try:
            param.resolve(value)
        except ParamValidationError:
            return False
        return True

    assert dag.params["data_dir"] == str(examples)
    assert accepts(str(examples)) and accepts(f"{examples}/") and accepts(f"{examples}/run-2.b_c")
    for outside in (
        "/",
        "/etc",
        str(tmp_path),
        f"{examples}-other",
        f"{examples}/..",
        f"{examples}/a/../..",
        f"{examples}/.hidden",
        f"{examples}\n",
        "relative/dir",
        "",
    ):
        assert not accepts(outside), outside
