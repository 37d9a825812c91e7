"""When the entry script cannot load on tables, mini-batches never read count their rows, or say unknown.

A script whose ``init()`` raises fails its first mini-batch and aborts the run; every other
mini-batch is skipped. Their items are counted from what the manifest knows (a key group's
rows), or from the piece itself (its bytes or its parquet footer), and a piece that cannot be
read says its count is unknown in the summary, the failure message and the report, not 1 or 0.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ThresholdExceeded
from airflow_parallelrun.core.inputs import key_groups
from airflow_parallelrun.core.inputs.datasets import TabularDataset
from airflow_parallelrun.core.spec import RunSpec

BROKEN_INIT = """
def init():
    raise RuntimeError("the model is missing")

def run(mini_batch):
    return mini_batch
"""


def aborted_run(tmp_path: Path, dataset: TabularDataset, *, after_partition=None, **config: Any):
    """Run every mini-batch with a script that cannot load, aggregate; return the summary and error."""
    script = tmp_path / "entry.py"
    script.write_text(BROKEN_INIT)
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(entry_script="entry.py", warm_workers=False, **config),
        entry_script=str(script),
    )
    descriptors = steps.partition(dataset, spec)
    if after_partition is not None:
        after_partition()
    steps.run_mini_batches([d["index"] for d in descriptors], spec)
    with pytest.raises(ThresholdExceeded) as caught:
        steps.aggregate(spec)
    summary = json.loads((tmp_path / "out" / "_parallelrun" / "summary.json").read_text())
    return summary, str(caught.value)


def report_rows(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "out" / "_parallelrun" / "processed_mini_batches.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(300)
def test_csv_pieces_never_read_count_their_rows(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for number in range(2):
        pd.DataFrame({"id": range(200), "text": ["x" * 30] * 200}).to_csv(
            tmp_path / "in" / f"t{number}.csv", index=False
        )
    summary, message = aborted_run(tmp_path, TabularDataset(path=str(tmp_path / "in")), mini_batch_size="2KB")
    assert summary["skipped_mini_batches"] == summary["total_mini_batches"] - 1 > 4
    assert summary["total_items"] == 400 and summary["mini_batches_with_unknown_items"] == 0
    assert summary["failed_items"] + summary["skipped_items"] == 400
    assert "unknown" not in message


@pytest.mark.timeout(300)
def test_key_groups_never_read_count_their_rows_from_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    frame = pd.DataFrame({"id": range(90), "Store": [i % 3 for i in range(90)]})
    frame.to_csv(tmp_path / "in" / "t.csv", index=False)

    def remove_input() -> None:
        # Nothing is left to read: the counts can only come from the manifest.
        (tmp_path / "in" / "t.csv").unlink()

    summary, _ = aborted_run(
        tmp_path,
        TabularDataset(path=str(tmp_path / "in")),
        after_partition=remove_input,
        partition_keys=["Store"],
    )
    assert (summary["total_items"], summary["failed_items"], summary["skipped_items"]) == (90, 30, 60)
    assert summary["mini_batches_with_unknown_items"] == 0
    rows = report_rows(tmp_path)
    assert [r["items_total"] for r in rows] == ["30", "30", "30"]
    assert [json.loads(r["partition_key_value"]) for r in rows] == [{"Store": 0}, {"Store": 1}, {"Store": 2}]


@pytest.mark.timeout(300)
def test_a_piece_that_cannot_be_read_says_its_count_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": list(range(50))}), tmp_path / "in" / "a.parquet")
    (tmp_path / "in" / "b.parquet").write_bytes(b"PAR1 not a parquet file")
    summary, message = aborted_run(tmp_path, TabularDataset(path=str(tmp_path / "in"), format="parquet"))
    assert summary["mini_batches_with_unknown_items"] == 1 and summary["total_items"] == 50
    assert "items: 50 failed of 50, and the items of 1 mini-batch are unknown" in message
    rows = report_rows(tmp_path)
    assert [(r["status"], r["items_total"], r["items_unknown"]) for r in rows] == [
        ("failed", "50", "False"),
        ("skipped", "0", "True"),
    ]


@pytest.mark.timeout(300)
def test_rejected_rows_of_a_piece_count_once_among_the_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(key_groups, "SCAN_BYTES", 64)
    (tmp_path / "in").mkdir()
    lines = ["id,Store"] + [f"{i},{i % 2}" for i in range(20)]
    lines[5] = "4,0,extra"  # a ragged row: no group can claim it, one mini-batch reports it
    (tmp_path / "in" / "t.csv").write_text("\n".join(lines) + "\n")
    script = tmp_path / "entry.py"
    script.write_text("def run(mini_batch):\n    return list(mini_batch['id'])\n")
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(
            entry_script="entry.py", warm_workers=False, partition_keys=["Store"], error_threshold=-1
        ),
        entry_script=str(script),
    )
    descriptors = steps.partition(TabularDataset(path=str(tmp_path / "in")), spec)
    steps.run_mini_batches([d["index"] for d in descriptors], spec)
    summary = steps.aggregate(spec)
    assert (summary["total_items"], summary["succeeded_items"], summary["failed_items"]) == (20, 19, 1)
    rows = report_rows(tmp_path)
    assert sorted(r["error_category"] for r in rows) == ["", "rejected_rows"]
