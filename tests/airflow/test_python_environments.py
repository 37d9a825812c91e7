"""A Python environment per step in real DAG runs: a pandas-2 entry script where Airflow has pandas 3.

The workers of a run with ``requirements=`` run in a virtual environment built from the package
index once per node (kept under ``.venv/test-envs`` between sessions, see tests/python_envs.py);
with ``python=`` in an interpreter that exists already.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.airflow.conftest import task_instances
from tests.python_envs import PANDAS_2, TEST_ENVS, python_with

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

# Written for pandas 2: a column set from an (n, 1) array of strings, which pandas 3 refuses
# (its string columns are 1-dimensional Arrow arrays). Each row also says who scored it.
SCRIPT = """
import sys

import numpy as np
import pandas as pd


def run(mini_batch):
    n = len(mini_batch)
    pred = np.where(mini_batch["value"].to_numpy() > 0.5, "high", "low")
    result = pd.DataFrame({"id": mini_batch["id"]})
    result["label"] = pred.reshape((n, 1))
    result["pandas"] = pd.__version__
    result["python"] = sys.executable
    return result
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=TabularDataset(path="{input}", format="csv"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script="{script}", mini_batch_size="4 rows", process_count_per_node=2,
            run_max_try=1, error_threshold=0, {environment}
        ),
    )
"""


@pytest.fixture
def table(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Ten rows in one csv file (three mini-batches), the script, and the labels expected."""
    folder = tmp_path / "in"
    folder.mkdir()
    values = [i / 10 for i in range(10)]
    pd.DataFrame({"id": range(10), "value": values}).to_csv(folder / "rows.csv", index=False)
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    return folder, script, ["high" if v > 0.5 else "low" for v in values]


def _run(write_dag, tmp_path: Path, table, name: str, environment: str):
    folder, script, _ = table
    dag = write_dag(
        DAG_SOURCE.format(
            dag_id=f"python_env_{name}_{tmp_path.name}",
            input=folder,
            output=tmp_path / "out",
            script=script,
            environment=environment,
        )
    )
    dag_run = dag.test()
    return dag_run, tmp_path / "out" / dag_run.run_id


def test_airflows_interpreter_has_pandas_3_and_the_pandas_2_script_fails_in_it(
    write_dag, tmp_path: Path, table
) -> None:
    assert pd.__version__.startswith("3."), "the premise: Airflow's constraints bring pandas 3"
    dag_run, out = _run(write_dag, tmp_path, table, "airflow", "")
    assert dag_run.state == "failed"
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["succeeded_items"] == 0
    assert "1-dimensional" in summary["first_errors"][0]["message"]


def test_requirements_run_the_pandas_2_script_in_an_environment_built_for_it(
    write_dag, tmp_path: Path, table
) -> None:
    environment = f"requirements={list(PANDAS_2)!r}, venv_cache_path={str(TEST_ENVS)!r}"
    dag_run, out = _run(write_dag, tmp_path, table, "requirements", environment)
    states = {key: state for key, (state, _) in task_instances(dag_run).items()}
    assert set(states.values()) == {"success"}, states
    rows = [line.split() for line in (out / "parallel_run_step.txt").read_text().splitlines()]
    assert [row[1] for row in rows] == table[2]
    assert {row[2] for row in rows} == {"2.2.3"}
    # The workers ran in the environment built under the cache, not in Airflow's interpreter.
    pythons = {row[3] for row in rows}
    assert len(pythons) == 1 and pythons.pop().startswith(str(TEST_ENVS) + "/venv-")


def test_python_runs_the_script_in_an_interpreter_that_exists(write_dag, tmp_path: Path, table) -> None:
    python = python_with(PANDAS_2)  # any interpreter with pandas 2 would do
    dag_run, out = _run(write_dag, tmp_path, table, "python", f"python={python!r}")
    assert dag_run.state == "success"
    rows = [line.split() for line in (out / "parallel_run_step.txt").read_text().splitlines()]
    assert [row[1] for row in rows] == table[2]
    assert {(row[2], row[3]) for row in rows} == {("2.2.3", python)}


def test_a_bad_requirement_fails_the_run_once_with_pips_message(write_dag, tmp_path: Path, table) -> None:
    cache = tmp_path / "envs"
    bad = ["pandas==2.2.*", "no-such-package-parallelrun==1.0"]
    environment = f"requirements={bad!r}, venv_cache_path={str(cache)!r}"
    dag_run, out = _run(write_dag, tmp_path, table, "bad", environment)
    assert dag_run.state == "failed"
    runs = {i: state for (task, i), (state, _) in task_instances(dag_run).items() if task == "score.run"}
    assert sorted(runs.values()) == ["failed", "skipped", "skipped"], runs
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    error = summary["first_errors"][0]["message"]
    assert "no-such-package-parallelrun==1.0" in error and "ERROR:" in error, error
    assert summary["aborted"]["reason"].startswith("the entry script cannot load")
    # pip ran once: in the partition task, which built the environment ahead of the run tasks.
    (log,) = cache.glob("venv-*.log")
    assert log.read_text().count("=== build for run") == 1
    assert not [p for p in cache.glob("venv-*") if p.is_dir()]
