"""The example DAGs with their data and output on an object store, as a deployment allows it.

``PARALLELRUN_EXAMPLES_STORE`` names the store folder the examples' ``data_dir`` may point at,
``PARALLELRUN_EXAMPLES_CONN_ID`` the Connection that reaches it. ``parallelrun_digits`` runs on
S3 and ``parallelrun_tabular`` on Azure Blob (one example per store keeps the time down; both
DAGs share the same code path for the store).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow.conftest import load_dag_module, task_instances
from tests.conftest import DAGS
from tests.object_stores import ObjectStore, make_store

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

EXAMPLE_ON = {
    "s3": ("parallelrun_digits", "digits", 1797),
    "azure": ("parallelrun_tabular", "tabular", 20000),
}


def _use_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: ObjectStore) -> None:
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(tmp_path / "examples"))
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_STORE", store.url("examples"))
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_CONN_ID", store.conn_id)


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_an_example_dag_runs_with_its_data_and_output_on_the_store(
    kind: str, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(kind)
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    _use_store(monkeypatch, tmp_path, store)
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

    for name in ("parallelrun_digits", "parallelrun_tabular"):
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
    # The sensor's example keeps to the local folder: its store is not offered there.
    assert not accepts("parallelrun_sensor", "s3://team-bucket/examples")
