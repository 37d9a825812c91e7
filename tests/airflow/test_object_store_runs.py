"""Whole runs with their input and output on S3 (moto's server) and Azure Blob (Azurite).

Each run is a real Airflow run (``dag.test()``) whose tasks reach the store through the Connection
the ``object_store`` fixture sets, of the store's own type (``aws`` or ``wasb``), named in
``conn_id`` and ``output_conn_id`` as a user names theirs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.airflow.conftest import task_instances
from tests.object_stores import ObjectStore

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

# Files: the file's content; tables: the id of every row (read from the store, a piece at a time).
FILE_SCRIPT = """
def run(mini_batch):
    return [open(p).read() for p in mini_batch]
"""
TABLE_SCRIPT = """
def run(mini_batch):
    return [str(i) for i in mini_batch["id"]]
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, TabularDataset, ParallelRunConfig, ParallelRunOperator

def config(script, size):
    return ParallelRunConfig(entry_script=script, mini_batch_size=size, process_count_per_node=2,
                             run_max_try=1, error_threshold=-1)

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="files",
        inputs=FileDataset(path="{root}/files", pattern="*.txt", conn_id="{conn}"),
        output_path="{root}/out/files", output_conn_id="{conn}",
        config=config("{file_script}", "3"),
    )
    ParallelRunOperator(
        task_id="csv",
        inputs=TabularDataset(path="{root}/csv", format="csv", conn_id="{conn}"),
        output_path="{root}/out/csv", output_conn_id="{conn}",
        config=config("{table_script}", "1KB"),
    )
    ParallelRunOperator(
        task_id="parquet",
        inputs=TabularDataset(path="{root}/parquet", format="parquet", conn_id="{conn}"),
        output_path="{root}/out/parquet", output_conn_id="{conn}",
        config=config("{table_script}", "1KB"),
    )
    ParallelRunOperator(
        task_id="bytes",
        inputs=TabularDataset(path="{root}/big", format="csv", conn_id="{conn}"),
        output_path="{root}/out/bytes", output_conn_id="{conn}",
        config=config("{table_script}", "4KB"),
    )
"""

FILES = 7
CSV_FILES, CSV_ROWS = 3, 100  # three csv files of about 2.5 KB, cut at 1KB
PARQUET_ROWS, ROW_GROUP = 300, 50  # one parquet file of 6 row groups
BIG_ROWS = 2000  # one csv object of about 40 KB, cut into 4 KB byte ranges at line ends


def csv_bytes(first: int, rows: int) -> bytes:
    lines = ["id,text"] + [f"{i},row {i} {'x' * 12}" for i in range(first, first + rows)]
    return ("\n".join(lines) + "\n").encode()


def parquet_bytes(rows: int, row_group: int) -> bytes:
    table = pa.table({"id": list(range(rows)), "text": [f"row {i} {'y' * 20}" for i in range(rows)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group)
    return buffer.getvalue()


def put_inputs(store: ObjectStore, root: str = "") -> dict[str, list[str]]:
    """Write every kind of input under ``root`` on the store; return what each run must output."""
    for i in range(FILES):
        store.put(f"{root}files/item{i}.txt", f"v{i}".encode())
    for f in range(CSV_FILES):
        store.put(f"{root}csv/part{f}.csv", csv_bytes(f * CSV_ROWS, CSV_ROWS))
    store.put(f"{root}parquet/table.parquet", parquet_bytes(PARQUET_ROWS, ROW_GROUP))
    store.put(f"{root}big/big.csv", csv_bytes(0, BIG_ROWS))
    return {
        "files": [f"v{i}" for i in range(FILES)],
        "csv": [str(i) for i in range(CSV_FILES * CSV_ROWS)],
        "parquet": [str(i) for i in range(PARQUET_ROWS)],
        "bytes": [str(i) for i in range(BIG_ROWS)],
    }


def write_scripts(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "files.py").write_text(FILE_SCRIPT)
    (tmp_path / "table.py").write_text(TABLE_SCRIPT)
    return {"file_script": str(tmp_path / "files.py"), "table_script": str(tmp_path / "table.py")}


def read_json(store: ObjectStore, *parts: str) -> Any:
    return json.loads(store.fs().cat_file(store.path(*parts)))


def merged(store: ObjectStore, *parts: str) -> list[str]:
    return store.fs().cat_file(store.path(*parts, "parallel_run_step.txt")).decode().split()


def test_every_kind_of_input_on_the_store_is_scored_exactly_once(
    object_store: ObjectStore, write_dag, tmp_path: Path
) -> None:
    expected = put_inputs(object_store)
    dag = write_dag(
        DAG_SOURCE.format(
            dag_id=f"store_inputs_{object_store.kind}",
            root=object_store.url(),
            conn=object_store.conn_id,
            **write_scripts(tmp_path),
        )
    )
    dag_run = dag.test()
    assert dag_run.state == "success", task_instances(dag_run)
    for name, rows in expected.items():
        # Every row or file once, in input order, in the merged output on the store.
        assert merged(object_store, "out", name) == rows, name
        summary = read_json(object_store, "out", name, "_parallelrun", "summary.json")
        assert (summary["total_items"], summary["succeeded_items"], summary["failed_items"]) == (
            len(rows),
            len(rows),
            0,
        ), name
    # The inputs were split as their kinds split: files by count, csv and the big object by byte
    # ranges, parquet by row groups.
    mini_batches = {
        name: read_json(object_store, "out", name, "_parallelrun", "summary.json")["total_mini_batches"]
        for name in expected
    }
    assert mini_batches["files"] == 3
    assert mini_batches["bytes"] >= 8 and mini_batches["csv"] >= 2 * CSV_FILES
    assert 2 <= mini_batches["parquet"] <= PARQUET_ROWS // ROW_GROUP
    report = object_store.fs().cat_file(
        object_store.path("out", "bytes", "_parallelrun", "processed_mini_batches.csv")
    )
    assert b"big.csv[bytes=0:4096]" in report


# run() records the content of every file it is given (the local copy's name is not the point
# here), and fails on item5 while the flag file exists.
FLAKY_SCRIPT = """
import os

def run(mini_batch):
    with open({calls!r}, "a") as log:
        log.writelines(open(p).read() + "\\n" for p in mini_batch)
    if os.path.exists({flag!r}) and any(p.endswith("item5.txt") for p in mini_batch):
        raise RuntimeError("item5 is not ready")
    return [open(p).read() for p in mini_batch]
"""

RESUME_DAG = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset({source}, conn_id="{conn}"),
        output_path="{output}", output_conn_id="{conn}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", run_max_try=1,
                                 error_threshold=-1, process_count_per_node=2),
        resume={resume},
    )
"""


def test_resume_and_dead_letters_fed_back_on_the_store(
    object_store: ObjectStore, write_dag, tmp_path: Path
) -> None:
    store = object_store
    for i in range(8):
        store.put(f"in/item{i}.txt", f"v{i}".encode())
    calls, flag = tmp_path / "calls.txt", tmp_path / "fail-item5"
    script = tmp_path / "score.py"
    script.write_text(FLAKY_SCRIPT.format(calls=str(calls), flag=str(flag)))

    def dag(dag_id: str, source: str, output: str, resume: bool) -> Any:
        return write_dag(
            RESUME_DAG.format(
                dag_id=f"{dag_id}_{store.kind}",
                source=source,
                conn=store.conn_id,
                output=store.url(output),
                script=script,
                resume=resume,
            )
        )

    resumable = dag("store_resume", f'path="{store.url("in")}", pattern="*.txt"', "out", resume=True)
    flag.touch()
    first = resumable.test()
    assert task_instances(first)[("score.run", 2)][0] == "failed"
    assert read_json(store, "out", "_parallelrun", "summary.json")["failed_mini_batches"] == 1
    assert merged(store, "out") == ["v0", "v1", "v2", "v3", "v6", "v7"]

    # The dead letters name the failed inputs by URL, as a dataset takes them back.
    failed = store.fs().cat_file(store.path("out", "_parallelrun", "errors", "failed_inputs.txt")).decode()
    assert failed.split() == [store.url("in/item4.txt"), store.url("in/item5.txt")]
    letters = store.fs().ls(store.path("out", "_parallelrun", "errors"), detail=False)
    assert any(p.endswith("mb-000002.json") for p in letters)
    flag.unlink()
    calls.write_text("")
    again = dag("store_dead_letters", f"files={failed.split()!r}", "retry", resume=False)
    assert again.test().state == "success"
    assert calls.read_text().split() == ["v4", "v5"]
    assert merged(store, "retry") == ["v4", "v5"]

    # Resume: only the failed mini-batch runs again; the rest is reused from the store.
    calls.write_text("")
    assert resumable.test().state == "success"
    assert calls.read_text().split() == ["v4", "v5"]
    summary = read_json(store, "out", "_parallelrun", "summary.json")
    assert (summary["resumed_from_earlier_run"], summary["reused_mini_batches"]) == (True, 3)
    assert (summary["failed_mini_batches"], summary["succeeded_items"]) == (0, 8)
    assert merged(store, "out") == [f"v{i}" for i in range(8)]
