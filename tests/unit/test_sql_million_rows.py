"""A million-row PostgreSQL table with a skewed key: exact mini-batches, one snapshot, flat memory.

Nine rows in ten share one of three key values, the case where splitting by key ranges gives
very uneven batches. The partition reads it once into its snapshot; rows inserted and updated
while the mini-batches run are not seen; and the partition's memory does not grow with the table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from airflow_parallelrun import ParallelRunConfig, SqlDataset
from airflow_parallelrun.core import steps
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.manifest import iter_mini_batches
from tests.databases import open_database

pytestmark = pytest.mark.slow

MILLION, HUNDRED_K = 1_000_000, 100_000


def fill(conn, table: str, rows: int) -> None:
    conn.execute(
        text(
            f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, k INTEGER NOT NULL, amount NUMERIC(12, 2), "
            "name TEXT, at TIMESTAMP)"
        )
    )
    conn.execute(
        text(
            f"INSERT INTO {table} SELECT i, CASE WHEN i % 10 < 9 THEN i % 3 ELSE i END, i / 100.0, "
            "'customer ' || i, TIMESTAMP '2026-01-01' + i * INTERVAL '1 second' "
            f"FROM generate_series(1, {rows}) AS i"
        )
    )


@pytest.fixture(scope="module")
def big_tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[int, str]]]:
    """Return the PostgreSQL URL and a table of 1,000,000 rows and one of 100,000 (dropped after)."""
    db = open_database("postgresql", tmp_path_factory.mktemp("pg"))
    names = {n: f"sql_input_rows_{n}_{uuid.uuid4().hex[:8]}" for n in (MILLION, HUNDRED_K)}
    engine = db.engine()
    try:
        with engine.begin() as conn:
            for rows, name in names.items():
                fill(conn, name, rows)
        yield db.url, names
    finally:
        with engine.begin() as conn:
            for name in names.values():
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


SCRIPT = """
def run(mini_batch):
    return mini_batch[["id"]].assign(changed=mini_batch["amount"] < 0, rows=len(mini_batch))
"""


def test_a_million_skewed_rows_split_into_exactly_n_rows_each_and_later_writes_are_not_seen(
    big_tables, tmp_path: Path
) -> None:
    url, names = big_tables
    table = names[MILLION]
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    config = ParallelRunConfig(
        entry_script=str(script), mini_batch_size="70001 rows", append_row_format="parquet", error_threshold=0
    )
    spec = RunSpec(str(tmp_path / "out"), config.for_dataset(tabular=True), str(script))
    descriptors = steps.partition(SqlDataset(url=url, table=table, key="k"), spec)
    sizes = [mb.items for mb in iter_mini_batches(spec.layout())]
    assert sizes == [70_001] * 14 + [MILLION - 14 * 70_001]
    total = sum(d["count"] for d in descriptors)
    steps.run_mini_batches(range(total // 2), spec)
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:  # while the run goes on: new rows, and changed ones
        conn.execute(
            text(f"INSERT INTO {table} (id, k) SELECT i, 1 FROM generate_series(2000001, 2005000) i")
        )
        conn.execute(text(f"UPDATE {table} SET amount = -1 WHERE id % 1000 = 0"))
    engine.dispose()
    steps.run_mini_batches(range(total // 2, total), spec)
    summary = steps.aggregate(spec)
    assert (summary["status"], summary["succeeded_items"]) == ("succeeded", MILLION)
    scored = pd.read_parquet(tmp_path / "out" / "parallel_run_step.parquet")
    assert len(scored) == MILLION and scored["id"].is_unique
    assert scored["id"].min() == 1 and scored["id"].max() == MILLION  # no inserted row
    assert not scored["changed"].any()  # every row as it was when the partition read it
    assert sorted(scored.groupby("rows").size().items()) == [(19_986, 19_986), (70_001, 14 * 70_001)]


MEASURE = """
import json, resource, sys
import psutil, pyarrow.parquet, psycopg, sqlalchemy
from airflow_parallelrun import ParallelRunConfig, SqlDataset
from airflow_parallelrun.core import steps
from airflow_parallelrun.core.spec import RunSpec

url, table, out = sys.argv[1:4]
config = ParallelRunConfig(entry_script="x.py", mini_batch_size="50000 rows").for_dataset(tabular=True)
before = psutil.Process().memory_info().rss
steps.partition(SqlDataset(url=url, table=table), RunSpec(out, config, "x.py"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak, "growth": peak - before}))
"""


def partition_memory(url: str, table: str, out: Path) -> dict[str, int]:
    """Partition ``table`` in a fresh process; return its RSS before, its peak, and the growth."""
    code = textwrap.dedent(MEASURE)
    done = subprocess.run(
        [sys.executable, "-c", code, url, table, str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_partitions_memory_does_not_grow_with_the_table(big_tables, tmp_path: Path) -> None:
    url, names = big_tables
    small = partition_memory(url, names[HUNDRED_K], tmp_path / "small")
    large = partition_memory(url, names[MILLION], tmp_path / "large")
    mib = 1024 * 1024
    print(
        f"partition peak RSS growth: {HUNDRED_K} rows {small['growth'] / mib:.1f} MiB, "
        f"{MILLION} rows {large['growth'] / mib:.1f} MiB"
    )
    # Ten times the rows: the growth stays that of one chunk (the whole table would be ~10x).
    assert large["growth"] <= small["growth"] * 1.25 + 16 * mib, (small, large)
