"""Throttling and dropped connections on S3 and Azure Blob: retried, never a row lost or doubled.

A ``FaultyProxy`` stands between the run and the real server (moto's S3, Azurite). Every request
the run makes (listing, reads of the inputs, writes of the manifest, parts, statuses, merged
output, summary and report) is answered with a fault the first times it is seen (a throttle once,
a dropped connection three times): ``throttle`` (503 SlowDown), ``drop`` (the connection closed
before the server sees the request) or ``drop-after`` (the server acts on it, the answer is lost).

By default the storage libraries retry first (botocore inside s3fs; azure-storage-blob's retry
policy, 15 s and more before its first retry of a throttled request), then the package's own
retries (``core/storage/retries.py``). These tests turn the libraries' retries off, so that the
faults reach the package's retries (the ones under test: they must know each library's errors as
transient) and Azure's backoff does not make the tests wait: an ``aws`` Connection with
``config_kwargs`` in its extra (as the Amazon provider documents it) for botocore, and per-test
patches (``monkeypatch``) of s3fs's tries and azure-storage-blob's retry defaults, which hold
because ``dag.test()`` makes every storage call in the test process. A dropped connection is
still retried once below them (by aiohttp or azure-core's transport), hence three drops per
request. ``tests/unit/test_object_store_retries.py`` shows the libraries' defaults at work.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.airflow.conftest import task_instances
from tests.object_stores import ObjectStore

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SCRIPT = """
def run(mini_batch):
    return [open(p).read() for p in mini_batch]
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt", conn_id="{conn}"),
        output_path="{output}", output_conn_id="{conn}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", run_max_try=1,
                                 process_count_per_node=1),
    )
"""


@pytest.fixture
def no_library_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give s3fs one try and azure-storage-blob no retry (defaults: 5 tries; 3 retries from 15 s)."""
    import s3fs
    from azure.storage.blob._shared import policies_async

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    # ExponentialRetry(initial_backoff, increment_base, retry_total, retry_to_secondary, random_jitter_range)
    monkeypatch.setattr(policies_async.ExponentialRetry.__init__, "__defaults__", (0.2, 0, 0, False, 0))


def first_times(fault: str, times: int):
    """Return a proxy fault answering each distinct request (method, path) ``times`` times with ``fault``."""
    seen: Counter[tuple[str, str]] = Counter()

    def decide(number: int, method: str, path: str) -> str | None:
        key = (method, path.split("?", 1)[0])
        seen[key] += 1
        return fault if seen[key] <= times else None

    return decide


@pytest.mark.parametrize("fault", ["throttle", "drop", "drop-after"])
def test_faults_on_every_request_are_retried_and_every_row_is_written_once(
    object_store: ObjectStore,
    fault: str,
    write_dag,
    tmp_path: Path,
    no_library_retries: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i in range(6):
        object_store.put(f"in/item{i}.txt", f"v{i}".encode())
    faulty = object_store.behind_proxy(fault=first_times(fault, 1 if fault == "throttle" else 3))
    connection = faulty.connection()
    if faulty.kind == "s3":  # botocore's own tries: one (the Amazon provider's documented extra)
        connection["extra"]["config_kwargs"] = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{faulty.conn_id.upper()}", json.dumps(connection))
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    dag = write_dag(
        DAG_SOURCE.format(
            dag_id=f"store_faults_{object_store.kind}_{fault.replace('-', '_')}",
            input=faulty.url("in"),
            output=faulty.url("out"),
            conn=faulty.conn_id,
            script=script,
        )
    )
    dag_run = dag.test()
    assert dag_run.state == "success", task_instances(dag_run)

    # Read back without the proxy: every row once, in order, and a summary that counts them once.
    fs = object_store.fs()
    assert fs.cat_file(object_store.path("out", "parallel_run_step.txt")).decode().split() == [
        f"v{i}" for i in range(6)
    ]
    summary = json.loads(fs.cat_file(object_store.path("out", "_parallelrun", "summary.json")))
    assert (summary["total_items"], summary["succeeded_items"], summary["failed_items"]) == (6, 6, 0)
    assert summary["total_mini_batches"] == summary["succeeded_mini_batches"] == 3
    parts = fs.ls(object_store.path("out", "_parallelrun", "parts"), detail=False)
    assert len(parts) == 3, parts  # one part per mini-batch: no retried write left a second

    # The faults hit reads of the inputs and writes of parts, statuses, merged output and summary.
    faulted = {(method, path.split("?", 1)[0]) for _, method, path, _ in faulty.proxies[0].faults}
    for method, tail in [
        ("GET", "/in/item3.txt"),
        ("PUT", "/_parallelrun/parts/mb-000001"),
        ("PUT", "/_parallelrun/status/mb-000001.json"),
        ("PUT", "/out/parallel_run_step.txt"),
        ("PUT", "/_parallelrun/summary.json"),
    ]:
        assert any(m == method and tail in p for m, p in faulted), (method, tail, sorted(faulted))
