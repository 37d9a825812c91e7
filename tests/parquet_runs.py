"""A run of parquet files on an object store, as the benchmark's workload (a) runs there (tests, tools)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.location import set_storage_options
from tests.object_stores import ObjectStore

#: The entry script: each input row's id back, so the merged output shows every row once, in order.
SCRIPT = """
def run(mini_batch):
    return mini_batch[["id"]]
"""


def parquet_bytes(first: int, rows: int) -> bytes:
    """Return a parquet file of ``rows`` rows with ids from ``first``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": list(range(first, first + rows)), "x": [0.5] * rows}), buffer)
    return buffer.getvalue()


def scoring_spec(store: ObjectStore, folder: Path, **config: Any) -> RunSpec:
    """Reach ``store`` through its Connection here; return a run's spec writing under its ``out``.

    One mini-batch per input file (64MB), the merged output as parquet; ``config`` adds to it.
    """
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    set_storage_options(store.url(), ParallelRunStorageHook(store.conn_id).filesystem(store.url()))
    script = folder / "score.py"
    script.write_text(SCRIPT)
    return RunSpec(
        output_path=store.url("out"),
        config=ParallelRunConfig(
            entry_script="score.py", mini_batch_size="64MB", append_row_format="parquet", **config
        ),
        entry_script=str(script),
    )
