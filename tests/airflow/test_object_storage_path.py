"""Airflow's ``ObjectStoragePath`` as the input and output path: the Connection it names is used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_parallelrun import FileDataset
from airflow_parallelrun.core.errors import ConfigError

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DAG_SOURCE = """
from airflow.sdk import DAG, ObjectStoragePath
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path=ObjectStoragePath("{input}"), pattern="*.txt"),
        output_path=ObjectStoragePath("{output}"),
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", process_count_per_node=1),
    )
"""


def _with_conn(url: str, conn_id: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{conn_id}@{rest}"


def test_a_run_reads_and_writes_through_the_connections_its_object_storage_paths_name(
    write_dag, tmp_path: Path, object_store
) -> None:
    for i in range(5):
        object_store.put(f"in/item{i}.txt", f"v{i}".encode())
    script = tmp_path / "score.py"
    script.write_text("def run(mini_batch):\n    return [open(p).read() for p in mini_batch]\n")
    source = DAG_SOURCE.format(
        dag_id=f"osp_{object_store.kind}",
        input=_with_conn(object_store.url("in"), object_store.conn_id),
        output=_with_conn(object_store.url("out"), object_store.conn_id),
        script=script,
    )
    dag_run = write_dag(source).test()
    assert dag_run.state == "success"
    fs = object_store.fs()
    assert fs.cat_file(object_store.path("out/parallel_run_step.txt")).decode().split() == [
        f"v{i}" for i in range(5)
    ]
    summary = json.loads(fs.cat_file(object_store.path("out/_parallelrun/summary.json")))
    assert (summary["total_items"], summary["succeeded_items"]) == (5, 5)


def test_an_object_storage_path_gives_its_connection_and_a_second_one_is_refused() -> None:
    from airflow.sdk import ObjectStoragePath

    dataset = FileDataset(path=ObjectStoragePath("s3://images_store@bucket/images"))
    assert (dataset.path, dataset.conn_id) == ("s3://bucket/images", "images_store")
    with pytest.raises(
        ConfigError, match="names the Connection 'images_store' but the conn_id given is 'other'"
    ):
        FileDataset(path=ObjectStoragePath("s3://images_store@bucket/images"), conn_id="other")
