"""What the "Parallel run" view reads of a run: nothing yet, progress mid-run, the summary and report after.

Real runs of the core steps on a local folder (no Airflow scheduler): the same records the view
reads in the api-server (``plugins/run_records.py``). The browser test drives the whole view.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.plugins.run_records import ParallelRunRef, describe_run, read_report_html

# The second item of each mini-batch fails: the view counts it.
ENTRY_SCRIPT = "def run(mini_batch):\n    return mini_batch[:1]\n"


@pytest.fixture
def run(tmp_path: Path) -> tuple[RunSpec, FileDataset, ParallelRunRef]:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(8):
        (inputs / f"item_{i}.txt").write_text(f"{i}\n")
    script = tmp_path / "entry.py"
    script.write_text(ENTRY_SCRIPT)
    output = str(tmp_path / "out")
    config = ParallelRunConfig(
        entry_script="entry.py", mini_batch_size="2", error_threshold=-1, warm_workers=False
    )
    spec = RunSpec(output_path=output, config=config, entry_script=str(script))
    return spec, FileDataset(path=str(inputs), pattern="*.txt"), ParallelRunRef("score", output)


def test_the_view_reads_nothing_then_progress_then_the_summary_and_report(run) -> None:
    spec, dataset, ref = run
    assert describe_run(ref)["state"] == "partitioning"

    steps.partition(dataset, spec)
    steps.run_mini_batches([0, 2], spec)
    running = describe_run(ref)
    assert running["state"] == "running" and running["summary"] is None
    progress = running["progress"]
    assert (progress["mini_batches_done"], progress["mini_batches_total"]) == (2, 4)
    assert (progress["items_done"], progress["items_total"], progress["items_failed"]) == (4, 8, 2)
    assert progress["eta_seconds"] is not None and not progress["finished"]

    steps.run_mini_batches([1, 3], spec)
    summary = steps.aggregate(spec)
    finished = describe_run(ref)
    assert finished["state"] == "finished"
    written = json.loads((Path(ref.output_path) / "_parallelrun" / "summary.json").read_text())
    assert finished["summary"] == written
    assert written["failed_items"] == finished["progress"]["items_failed"] == 4 == summary["failed_items"]
    assert finished["progress"]["mini_batches_done"] == written["total_mini_batches"] == 4

    # The aggregate wrote the report; the view serves its bytes, and says when there is none.
    report = Path(ref.output_path) / "_parallelrun" / "report.html"
    assert finished["report_html"] is True and read_report_html(ref) == report.read_bytes()
    report.unlink()
    assert describe_run(ref)["report_html"] is False and read_report_html(ref) is None


def test_a_store_that_cannot_be_read_is_said_and_named(tmp_path: Path) -> None:
    ref = ParallelRunRef("score", "nosuchprotocol://bucket/out")
    shown = describe_run(ref)
    assert shown["state"] == "unreadable" and "nosuchprotocol" in shown["error"]
