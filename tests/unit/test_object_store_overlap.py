"""On a slow object store the partition and the aggregate keep several reads in flight, in order.

A real run (``steps.partition``, real worker processes, ``steps.aggregate``) of parquet files on
moto's S3 server behind ``FaultyProxy`` adding 50 ms to every request. The proxy records every
request's start and end: the parquet footers the partition reads, and the statuses and parts the
aggregate reads, overlap (several answered at once), where a plain loop would have one at a time;
the aggregate reads each status with one GET, no lookup first.
One read of a part is answered with a throttle, with the storage libraries' own retries turned
off (as in ``tests/airflow/test_object_store_faults.py``): the package's retries read it again,
and the merged output holds every row once, in input order.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.inputs.datasets import TabularDataset
from airflow_parallelrun.core.storage.location import clear_storage_options
from tests.object_stores import make_store
from tests.parquet_runs import parquet_bytes, scoring_spec

pytestmark = pytest.mark.slow

FILES, ROWS = 16, 5


def test_footers_statuses_and_parts_are_read_several_at_once_and_a_throttled_part_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    store = make_store("s3")
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    for f in range(FILES):
        store.put(f"in/t{f:02d}.parquet", parquet_bytes(f * ROWS, ROWS))
    throttled: list[str] = []

    def throttle_one_part_read(number: int, method: str, path: str) -> str | None:
        if method == "GET" and "/_parallelrun/parts/" in path and not throttled:
            throttled.append(path)
            return "throttle"
        return None

    slow = store.behind_proxy(delay=0.05)
    proxy = slow.proxies[0]
    connection = slow.connection()  # botocore's own tries: one, so the throttle reaches ours
    connection["extra"]["config_kwargs"] = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{slow.conn_id.upper()}", json.dumps(connection))
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    spec = scoring_spec(slow, tmp_path, run_max_try=1)
    try:
        started = time.monotonic()
        descriptors = steps.partition(TabularDataset(path=slow.url("in"), format="parquet"), spec)
        footers = proxy.most_at_once("GET", "/in/t", since=started)
        mini_batches = sum(d["count"] for d in descriptors)
        steps.run_mini_batches(range(mini_batches), spec)
        proxy.fault = throttle_one_part_read
        started = time.monotonic()
        summary = steps.aggregate(spec)
        statuses = proxy.most_at_once("GET", "/_parallelrun/status/", since=started)
        # One GET a status, no lookup first (a HEAD before each was a round trip more).
        looked_up = [p for s, _, m, p in proxy.spans if s >= started and m == "HEAD" and "/status/" in p]
        parts = proxy.most_at_once("GET", "/_parallelrun/parts/", since=started)
    finally:
        clear_storage_options()
        proxy.close()

    assert mini_batches == FILES  # one mini-batch per file
    assert footers >= 4, f"at most {footers} parquet footer read(s) at once"
    assert statuses >= 4, f"at most {statuses} status read(s) at once"
    assert not looked_up, looked_up
    assert parts >= 4, f"at most {parts} part read(s) at once"
    # The throttled read was read again (by the package's retries: the libraries' are off).
    assert len(throttled) == 1 and [f[3] for f in proxy.faults] == ["throttle"]
    assert sum(1 for _, _, m, p in proxy.spans if m == "GET" and p == throttled[0]) >= 2
    # Every row once, in input order; counted once.
    merged = pq.read_table(io.BytesIO(store.fs().cat_file(store.path("out", "parallel_run_step.parquet"))))
    assert merged.column("id").to_pylist() == list(range(FILES * ROWS))
    assert (summary["succeeded_items"], summary["failed_items"]) == (FILES * ROWS, 0)
