"""Resume over unchanged input, start clean over changed input, and more mini-batches than Airflow maps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.airflow.conftest import task_instances

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

# run() records every file it is given, and fails on item5 while the flag file exists.
SCRIPT = """
import os

def run(mini_batch):
    with open({calls!r}, "a") as log:
        log.writelines(os.path.basename(p) + "\\n" for p in mini_batch)
    if os.path.exists({flag!r}) and any(p.endswith("item5.txt") for p in mini_batch):
        raise RuntimeError("item5 is not ready")
    return [open(p).read() for p in mini_batch]
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="{size}", run_max_try=1,
                                 error_threshold=-1, process_count_per_node=2),
        resume={resume},
    )
"""


@pytest.fixture
def setup(tmp_path: Path, write_dag):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        (folder / f"item{i}.txt").write_text(f"v{i}")
    calls, flag = tmp_path / "calls.txt", tmp_path / "fail-item5"
    script = tmp_path / "score.py"
    script.write_text(SCRIPT.format(calls=str(calls), flag=str(flag)))

    def make(dag_id: str, *, resume: bool, size: int = 2):
        return write_dag(
            DAG_SOURCE.format(
                dag_id=dag_id, input=folder, output=tmp_path / "out", script=script, size=size, resume=resume
            )
        )

    return folder, calls, flag, make


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "_parallelrun" / "summary.json").read_text())


def test_a_resumed_run_over_unchanged_input_runs_only_what_did_not_succeed(tmp_path: Path, setup) -> None:
    _folder, calls, flag, make = setup
    flag.touch()
    dag = make("resume_unchanged", resume=True)
    first = dag.test()
    assert _summary(tmp_path)["failed_mini_batches"] == 1
    assert task_instances(first)[("score.run", 2)][0] == "failed"

    flag.unlink()
    calls.write_text("")
    second = dag.test()
    assert second.state == "success"
    # Only mb-000002 (item4, item5) ran again; the three that had succeeded were reused.
    assert calls.read_text().split() == ["item4.txt", "item5.txt"]
    summary = _summary(tmp_path)
    assert summary["resumed_from_earlier_run"] is True
    assert "input is unchanged" in summary["resume_note"]
    assert (summary["reused_mini_batches"], summary["failed_mini_batches"], summary["succeeded_items"]) == (
        3,
        0,
        8,
    )
    assert (tmp_path / "out" / "parallel_run_step.txt").read_text().split() == [f"v{i}" for i in range(8)]


def test_a_resumed_run_over_changed_input_starts_clean_and_says_so(tmp_path: Path, setup) -> None:
    folder, calls, _flag, make = setup
    dag = make("resume_changed", resume=True)
    assert dag.test().state == "success"
    item = folder / "item1.txt"
    os.utime(item, (item.stat().st_atime, item.stat().st_mtime + 60))
    calls.write_text("")
    assert dag.test().state == "success"
    assert len(calls.read_text().split()) == 8
    summary = _summary(tmp_path)
    assert summary["resumed_from_earlier_run"] is False
    assert "the input changed" in summary["resume_note"] and "starting clean" in summary["resume_note"]
    assert summary["reused_mini_batches"] == 0


def test_without_resume_a_new_run_at_the_same_output_path_runs_everything(tmp_path: Path, setup) -> None:
    _folder, calls, _flag, make = setup
    dag = make("no_resume", resume=False)
    assert dag.test().state == "success"
    calls.write_text("")
    assert dag.test().state == "success"
    assert len(calls.read_text().split()) == 8
    assert _summary(tmp_path)["reused_mini_batches"] == 0


def test_more_mini_batches_than_airflow_maps_are_packed_with_per_mini_batch_accounting(
    tmp_path: Path, setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder, _calls, flag, make = setup
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    flag.touch()
    dag = make("packed", resume=False, size=1)
    dag_run = dag.test()
    runs = {i: v for (task, i), v in task_instances(dag_run).items() if task == "score.run"}
    # 8 mini-batches of one file, at most 3 task instances: packs of 3, 3 and 2.
    assert sorted(runs) == [0, 1, 2]
    assert runs[0][1] == "mb-000000..mb-000002 (3 mini-batches) 3 files item0.txt .. item2.txt"
    assert runs[1][0] == "failed"  # holds mb-000005 (item5), which failed
    assert {runs[0][0], runs[2][0]} == {"success"}
    summary = _summary(tmp_path)
    assert (summary["total_mini_batches"], summary["failed_mini_batches"], summary["succeeded_items"]) == (
        8,
        1,
        7,
    )
    report = (tmp_path / "out" / "_parallelrun" / "processed_mini_batches.csv").read_text().splitlines()
    assert len(report) == 9 and report[6].startswith("mb-000005,") and ",failed," in report[6]
    # The failure in the middle of a pack loses nothing of the others in it.
    assert (tmp_path / "out" / "parallel_run_step.txt").read_text().split() == [
        f"v{i}" for i in range(8) if i != 5
    ]
