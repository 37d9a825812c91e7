"""The benchmark harness runs end to end at ``--size tiny`` and its contenders compute the same thing.

No timing is asserted: the machine is shared. What is checked is that every figure is in the
JSON, and that our operator's merged output equals the process-pool baseline's, row for row.
Ray Data runs when ``ray[data]`` is installed; otherwise its reason is in the result and printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MAIN_FIGURES = (
    "walls_s",
    "wall_median_s",
    "items_per_s",
    "ratio_to_baseline",
    "overhead_ms_per_mini_batch",
    "worker_peak_rss_mb",
    "same_output_as_baseline",
)
OURS_FIGURES = ("merge_peak_rss_mb", "merge_step_mb", "engine_overhead_ms_per_mini_batch")


def run_harness(tmp_path: Path, *args: str) -> dict:
    """Run ``python -m benchmarks --size tiny ARGS`` as a user would, and return its JSON record."""
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTEST_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--size",
            "tiny",
            "--data-dir",
            str(tmp_path / "data"),
            "--results-dir",
            str(results),
            "--keep-outputs",
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "| workload | contender |" in done.stdout  # the markdown table
    assert (results / "latest.md").read_text() in done.stdout
    (saved,) = results.glob("*.json")
    return json.loads(saved.read_text())


def figures(record: dict, job: str, contender: str) -> dict:
    (found,) = [f for f in record["summary"]["main"] if f["job"] == job and f["contender"] == contender]
    return found


def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tiny" / "work" / "runs"


def test_tiny_run_with_dags_test_process_pool_and_ray(tmp_path: Path) -> None:
    record = run_harness(tmp_path, "--contenders", "ours-dags-test,process-pool,ray-data")
    machine = record["machine"]
    assert machine["cpu_count"] and machine["ram_gb"] and machine["python"]
    assert machine["versions"]["apache-airflow"]

    contenders = ["ours-dags-test", "process-pool"]
    if "ray-data" in record["unavailable"]:
        print(f"ray-data not measured: {record['unavailable']['ray-data']}")
        assert "ray" in record["unavailable"]["ray-data"]
    else:
        contenders.append("ray-data")
    for job in ("a", "b", "c"):
        for contender in contenders:
            f = figures(record, job, contender)
            assert f["ok"], (job, contender, f["errors"])
            for key in MAIN_FIGURES:
                assert key in f, (job, contender, key)
            assert f["wall_median_s"] > 0
            assert f["rows"] == f["items"], (job, contender)
            if contender != "process-pool":
                assert f["same_output_as_baseline"] is True, (job, contender)
        ours = figures(record, job, "ours-dags-test")
        for key in OURS_FIGURES:
            assert ours[key] is not None, (job, key)
    # (c) counts init() calls: at least one per worker process, at most one per mini-batch.
    for contender in contenders:
        calls = figures(record, "c", contender)["init_calls"]
        assert all(1 <= c <= record["size_parameters"]["slow_init_mini_batches"] for c in calls), calls

    # Scaling: ours and the baseline at 1x, 2x, 4x, with the merge and partition memory of each size.
    scaling = record["summary"]["scaling"]
    assert sorted((f["contender"], f["mini_batches"]) for f in scaling) == [
        (c, n) for c in ("ours-dags-test", "process-pool") for n in (1, 2, 4)
    ]
    for f in scaling:
        assert f["ok"] and f["wall_median_s"] > 0, f
        if f["contender"] == "ours-dags-test":
            assert f["merge_peak_rss_mb"] and f["partition_peak_rss_mb"], f
            assert f["same_output_as_baseline"] is True, f
    assert set(record["summary"]["growth"]) == {"ours-dags-test", "process-pool"}

    # Row for row: the operator's merged output is the baseline's files, in input order.
    import pandas as pd

    runs = runs_dir(tmp_path) / "rep1"
    ours_a = pd.read_parquet(runs / "ours-dags-test" / "a" / "parallel_run_step.parquet")
    pool_a = pd.concat(
        [pd.read_parquet(p) for p in sorted((runs / "process-pool" / "a").glob("*.parquet"))],
        ignore_index=True,
    )
    assert (
        len(ours_a) == record["size_parameters"]["tabular_files"] * record["size_parameters"]["rows_per_file"]
    )
    pd.testing.assert_frame_equal(ours_a, pool_a, check_exact=True)
    for job in ("b", "c"):
        ours_lines = (runs / "ours-dags-test" / job / "parallel_run_step.txt").read_text().splitlines()
        pool_lines = (runs / "process-pool" / job / "out.txt").read_text().splitlines()
        assert ours_lines and ours_lines == pool_lines, job


def test_tiny_run_under_a_real_scheduler(tmp_path: Path) -> None:
    record = run_harness(
        tmp_path,
        *("--contenders", "ours-scheduler,airflow-floor,process-pool", "--workloads", "a,c,f"),
        *("--scaling", "off"),
    )
    for job in ("a", "c"):
        f = figures(record, job, "ours-scheduler")
        assert f["ok"], f["errors"]
        assert f["same_output_as_baseline"] is True
        assert 1 <= f["task_instances"] <= f["mini_batches"]
        assert f["ti_overhead_ms_per_mini_batch"] is not None
        assert f["aggregate_task_peak_rss_mb"], "the aggregate task's process was not sampled"
        for key in (*MAIN_FIGURES, *OURS_FIGURES):
            assert f[key] is not None, key
    assert record["airflow_startup_s"]["ours-scheduler"]
    assert_fixed_cost(record, tmp_path)


def assert_fixed_cost(record: dict, tmp_path: Path) -> None:
    """(f): one file of 100 rows, its fixed cost a figure of its own, broken down step by step.

    ``airflow-floor`` runs the same shape of DAG with no-op tasks: Airflow's own cost of such a run.
    """
    f = figures(record, "f", "ours-scheduler")
    assert f["ok"] and f["same_output_as_baseline"] is True, f["errors"]
    assert f["mini_batches"] == 1 and f["rows"] == f["items"] == 100
    fixed = {c["contender"]: c for c in record["summary"]["fixed_cost"]}
    assert set(fixed) == {"ours-scheduler", "airflow-floor", "process-pool"}
    ours, floor = fixed["ours-scheduler"], fixed["airflow-floor"]
    # Wall time minus run() time over the 2 processes: below the wall, and the run took some.
    assert 0 < ours["fixed_cost_s"] < f["wall_median_s"]
    assert ours["above_floor_s"] == round(ours["fixed_cost_s"] - floor["fixed_cost_s"], 3)
    parts, aggregate = ours["parts"], ours["aggregate_parts"]
    assert all(v is not None for v in parts.values()), parts
    assert all(v is not None and v >= 0 for v in aggregate.values()), aggregate
    # The steps and the hops between them cover the run: their sum is its wall time, to the ms.
    spans = ("partition_task_s", "run_tasks_s", "aggregate_task_s")
    hops = ("hop_before_partition_s", "hop_before_run_s", "hop_before_aggregate_s", "hop_after_aggregate_s")
    assert abs(sum(parts[k] for k in (*spans, *hops)) - f["wall_median_s"]) < 0.05, parts
    assert parts["partition_step_s"] <= parts["partition_task_s"]
    assert parts["aggregate_step_s"] <= parts["aggregate_task_s"]
    # The floor: three task instances that ran and succeeded, every hop and span measured, no steps.
    floor_run = figures(record, "f", "airflow-floor")
    assert floor_run["ok"] and floor_run["task_instances"] == 1, floor_run["errors"]
    assert floor_run["same_output_as_baseline"] is None  # it computes nothing
    assert floor["fixed_cost_s"] == floor_run["wall_median_s"] > 0
    floor_parts = floor["parts"]
    assert all(floor_parts[k] is not None and floor_parts[k] >= 0 for k in (*spans, *hops)), floor_parts
    assert abs(sum(floor_parts[k] for k in (*spans, *hops)) - floor_run["wall_median_s"]) < 0.05
    assert floor_parts["partition_step_s"] is None and floor_parts["aggregate_step_s"] is None
    latest = (tmp_path / "results" / "latest.md").read_text()
    assert "(f) fixed cost per run" in latest and "| airflow-floor |" in latest
    assert "Where the fixed cost went" in latest and "| part | ours-scheduler | airflow-floor |" in latest


def test_tiny_sql_run_under_a_real_scheduler_against_the_read_sql_loop(tmp_path: Path) -> None:
    """(d): a PostgreSQL table scored by SqlDataset and SqlTable, side by side with the pool of to_sql."""
    from benchmarks.sql_tables import POSTGRES_URL, drop_tables, unreachable
    from tests.databases import skip_or_fail

    if reason := unreachable(POSTGRES_URL):
        skip_or_fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({reason}); workload d needs it")
    prefix = f"sqlex_{uuid.uuid4().hex[:8]}"
    try:
        record = run_harness(
            tmp_path,
            *("--contenders", "ours-scheduler,process-pool", "--workloads", "d", "--scaling", "off"),
            *("--sql-prefix", prefix),
        )
    finally:
        drop_tables(POSTGRES_URL, [f"{prefix}_customers_tiny", f"{prefix}_scores_tiny"])
    rows = record["size_parameters"]["sql_rows"]
    for contender in ("ours-scheduler", "process-pool"):
        f = figures(record, "d", contender)
        assert f["ok"], (contender, f["errors"])
        assert f["rows"] == f["distinct_ids"] == f["items"] == rows, (contender, f)
        assert f["wall_median_s"] > 0 and f["ratio_to_baseline"] is not None
        assert f["tree_peak_rss_mb"] and f["worker_peak_rss_mb"], contender
    ours = figures(record, "d", "ours-scheduler")
    assert ours["same_output_as_baseline"] is True
    assert ours["mini_batches"] == rows // record["size_parameters"]["sql_mini_batch_rows"]
    # Ours' tree is the whole Airflow: its idle components were there before the run, and more ran.
    assert 0 < ours["tree_first_rss_mb"] < ours["tree_peak_rss_mb"]
    assert "| ours-scheduler |" in (tmp_path / "results" / "latest.md").read_text().split("(d) SQL")[-1]


def test_tiny_run_on_s3_behind_latency_against_the_pool_on_the_same_store(tmp_path: Path) -> None:
    """``--store s3``: (a) on moto's S3 server behind the latency proxy, beside (a) on local disk.

    On 3 of tiny's 4 files (``--tabular-files``), locally and on the store alike.
    """
    record = run_harness(
        tmp_path,
        *("--contenders", "ours-dags-test,process-pool", "--workloads", "a", "--scaling", "off"),
        *("--store", "s3", "--latency-ms", "20", "--tabular-files", "3"),
    )
    assert record["store"] == {"kind": "s3", "latency_ms": 20.0}
    for contender in ("ours-dags-test", "process-pool"):
        for job in ("a", "a-s3"):
            f = figures(record, job, contender)
            assert f["ok"], (job, contender, f["errors"])
            assert f["rows"] == f["items"] == 3 * 2_000, (job, contender)
    # The same rows whichever the store, and the same as the pool's on that store.
    assert figures(record, "a-s3", "ours-dags-test")["same_output_as_baseline"] is True
    pool_digests = [figures(record, job, "process-pool")["digests"] for job in ("a", "a-s3")]
    assert pool_digests[0] == pool_digests[1]
    remote = record["summary"]["remote"]
    assert set(remote) == {"ours-dags-test", "process-pool"}
    assert all(r["remote_to_local"] > 0 for r in remote.values())
    assert "(a) on S3" in (tmp_path / "results" / "latest.md").read_text()
    # What was read and written on the store, through the Connection: the merged output of ours.
    runs = runs_dir(tmp_path) / "rep1"
    assert (runs / "ours-dags-test" / "a-s3" / "parallel_run_step.parquet").is_file()
