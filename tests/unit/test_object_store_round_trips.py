"""On a slow object store the partition and the aggregate wait few round trips one after another.

A run of parquet files (``steps.partition``, real worker processes, ``steps.aggregate``) on moto's
S3 server behind ``FaultyProxy`` adding 100 ms to every request, as workload (a) of the benchmark
runs on S3. The proxy records every request; ``FaultyProxy.sequential`` counts the longest chain
of them each starting after the one before it ended: the round trips a step waited for in a row.

- The partition looks the earlier run up (its manifest, its summary) with one read each, both at
  once and while the input is listed and its parquet footers read; an input folder that the
  listing finds files in is not looked up besides. 6 in a row, where it took 11 (a lookup
  before each read, the earlier run looked up before the input was listed).
- The aggregate reads each record with one GET (a manifest shard too), lists a folder with one
  listing (no lookup of the folder first), and reads the run tasks' progress records and resource
  samples while the merge runs. 10 in a row, where it took 20.
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
from tests.object_stores import ObjectStore
from tests.parquet_runs import parquet_bytes, scoring_spec

pytestmark = pytest.mark.slow

FILES, ROWS = 8, 50
#: Records of the run's state read with a lookup (HEAD) first, or a folder looked up before its listing.
STATE_LOOKUPS = ("manifest.json", "summary.json", "/manifest/shard-", "/progress", "/perf")


def test_partition_and_aggregate_wait_few_round_trips_in_a_row(
    s3_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for f in range(FILES):
        s3_store.put(f"in/t{f:02d}.parquet", parquet_bytes(f * ROWS, ROWS))
    slow = s3_store.behind_proxy(delay=0.1)
    proxy = slow.proxies[0]
    monkeypatch.setenv(f"AIRFLOW_CONN_{slow.conn_id.upper()}", json.dumps(slow.connection()))
    spec = scoring_spec(slow, tmp_path)
    try:
        started = time.monotonic()
        descriptors = steps.partition(TabularDataset(path=slow.url("in"), format="parquet"), spec)
        partitioned = time.monotonic()
        steps.run_mini_batches(range(sum(d["count"] for d in descriptors)), spec)
        aggregating = time.monotonic()
        summary = steps.aggregate(spec)
    finally:
        clear_storage_options()
    partition = [s for s in proxy.spans if started <= s[0] <= partitioned]
    aggregate = [s for s in proxy.spans if s[0] >= aggregating]

    assert (summary["succeeded_items"], summary["failed_items"]) == (FILES * ROWS, 0)
    merged = pq.read_table(
        io.BytesIO(s3_store.fs().cat_file(s3_store.path("out", "parallel_run_step.parquet")))
    )
    assert merged.column("id").to_pylist() == list(range(FILES * ROWS))
    # (The partition's removals of an earlier run's folders still look each one up.)
    looked_up = [p for _, _, m, p in partition if m == "HEAD" and any(s in p for s in STATE_LOOKUPS[:2])]
    looked_up += [p for _, _, m, p in aggregate if m == "HEAD" and any(s in p for s in STATE_LOOKUPS)]
    assert not looked_up, f"lookups before reads or listings: {looked_up}"
    assert not [p for _, _, m, p in partition if m == "HEAD" and "/in" in p], "the input folder was looked up"
    # Each footer read once, and the earlier run looked up while the input was listed.
    assert sum(1 for _, _, m, p in partition if m == "GET" and "/in/t" in p) == FILES
    listed = min(s for s, _, m, p in partition if "list-type" in p and "in%2F" in p)
    looked = min(s for s, _, m, p in partition if p.endswith("/manifest.json"))
    assert abs(listed - looked) < 0.1, "the input was listed after the earlier run was looked up"
    in_a_row = proxy.sequential(started, partitioned)
    assert in_a_row <= 8, f"the partition waited {in_a_row} round trips in a row ({len(partition)} requests)"
    in_a_row = proxy.sequential(aggregating)
    assert in_a_row <= 13, f"the aggregate waited {in_a_row} round trips in a row ({len(aggregate)} requests)"
