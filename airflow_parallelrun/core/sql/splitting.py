"""Split a SQL input: take (or reuse) its snapshot, then cut it as a parquet table is cut."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.inputs.key_groups import group_table
from airflow_parallelrun.core.inputs.splitting import partition_table
from airflow_parallelrun.core.sql.snapshot import fresh_snapshot, reusable_snapshot, source_fingerprint

if TYPE_CHECKING:
    from airflow_parallelrun.core.inputs.minibatch import MiniBatch
    from airflow_parallelrun.core.sizes import MiniBatchSize
    from airflow_parallelrun.core.sql.source import SqlDataset
    from airflow_parallelrun.core.storage.manifest import RunLayout

NO_ROWS_NOTE = "the SQL input returned no rows: the run has zero mini-batches and succeeds with zero items"


def partition_sql(
    dataset: SqlDataset,
    size: MiniBatchSize,
    layout: RunLayout,
    *,
    run_key: str,
    owner: dict[str, Any] | None,
    resume: bool,
    partition_keys: Sequence[str] | None = None,
) -> tuple[list[MiniBatch], dict[str, Any]]:
    """Return the mini-batches of the input's snapshot and facts for the manifest header.

    By rows, every mini-batch holds exactly ``size`` rows but the last (one snapshot file, cut
    by rows); by bytes, whole row groups are packed up to the size. With ``partition_keys``, one
    mini-batch per key group of the snapshot's rows, as for a parquet table.
    """
    source = source_fingerprint(dataset)
    marker = reusable_snapshot(layout, source, owner, resume)
    reused = marker is not None
    marker = marker or fresh_snapshot(dataset, layout, size, run_key, owner)
    path = layout.state("input", marker["file"])
    snapshot: list[tuple[str, int | None]] = [(layout.output.url_of(path), None)]
    if not marker["rows"]:
        batches = []
    elif partition_keys:
        batches = group_table(snapshot, "parquet", partition_keys)
    else:
        batches = partition_table(snapshot, "parquet", size)
    header = {
        "kind": "tabular",
        "format": "parquet",
        "input": dataset.describe(),
        "input_files": 1,
        "input_rows": marker["rows"],
        "refused_inputs": [],
        "duplicate_inputs_dropped": [],
        # A new snapshot is a new input: a resume over it starts clean; a reused one resumes.
        "fingerprint": hashlib.sha256(f"{source} {marker['file']} {marker['rows']}".encode()).hexdigest(),
        "mini_batch_size": {"unit": size.unit, "value": size.value},
        "snapshot": {
            "file": layout.output.url_of(path),
            "rows": marker["rows"],
            "taken_at": marker["taken_at"],
            "reused": reused,
        },
        "note": "" if marker["rows"] else NO_ROWS_NOTE,
    }
    return batches, header
