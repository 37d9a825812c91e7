"""Warm workers in a DAG run: ``init()`` once per worker process, not once per mapped task instance."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.conftest import task_instances

pytestmark = pytest.mark.airflow

SCRIPT = """
import os

def init():
    # Which task started this worker: none ("ahead") when the partition task warmed it.
    with open({init_log!r}, "a") as f:
        f.write(f"{{os.getpid()}} {{os.environ.get('PARALLELRUN_TASK_PID') or 'ahead'}}\\n")

def run(mini_batch):
    return [f"{{os.path.basename(p)}} {{os.getpid()}}" for p in mini_batch]
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="1", process_count_per_node=1,
                                 warm_workers={warm}, mini_batches_per_task=1),
    )
"""


@pytest.mark.slow
@pytest.mark.parametrize("warm", [True, False])
def test_init_runs_once_per_worker_process_with_warm_workers(write_dag, tmp_path: Path, warm: bool) -> None:
    names = [f"item{i}.txt" for i in range(6)]
    dag_run, states, init_log = run_dag(write_dag, tmp_path, names, warm=warm)
    assert len([key for key in states if key[0] == "score.run"]) == 6

    lines = (tmp_path / "out" / dag_run.run_id / "parallel_run_step.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == names
    run_pids = {line.split()[1] for line in lines}
    inits = [line.split() for line in init_log.read_text().splitlines()]
    if warm:
        # Six task instances, one warm worker: imports and init() paid once, and started by the
        # partition task, ahead of the run tasks.
        assert inits == [[pid, "ahead"] for pid in run_pids]
    else:
        assert len(inits) == 6 and len(run_pids) == 6
    # The aggregate task stopped the run's pool: no worker of it is left running.
    deadline = time.monotonic() + 120  # only bounds a hang: the pool stops within moments
    while time.monotonic() < deadline and not all(gone(int(pid)) for pid in run_pids):
        time.sleep(0.1)
    assert [pid for pid in run_pids if not gone(int(pid))] == []


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1].startswith("Z")


def test_the_partition_task_starts_a_warm_worker_before_it_lists_the_input(
    write_dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' imports and init() overlap with the listing and splitting, not only with Airflow's hop."""
    from airflow_parallelrun.core import steps

    init_log = tmp_path / "init.log"
    partition, seen_before = steps.partition, []

    def partition_once_a_worker_is_up(*args, **kwargs):
        deadline = time.monotonic() + 60  # only bounds the wait: a warm worker is up within seconds
        while time.monotonic() < deadline and not init_log.exists():
            time.sleep(0.05)
        seen_before.append(init_log.exists())
        return partition(*args, **kwargs)

    monkeypatch.setattr(steps, "partition", partition_once_a_worker_is_up)
    run_dag(write_dag, tmp_path, ["item0.txt"], warm=True)
    # init() ran in a worker the partition task started before it partitioned, and only there.
    assert seen_before == [True]
    assert [line.split()[1] for line in init_log.read_text().splitlines()] == ["ahead"]


def run_dag(
    write_dag: Any, tmp_path: Path, names: list[str], *, warm: bool
) -> tuple[Any, dict[tuple[str, int], str], Path]:
    """Run the DAG on one input file per name; return its run, its task states and the init() log."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(name)
    init_log = tmp_path / "init.log"
    script = tmp_path / "score.py"
    script.write_text(SCRIPT.format(init_log=str(init_log)))
    dag_id = f"warm_{warm}_{tmp_path.name}"
    dag = write_dag(
        DAG_SOURCE.format(dag_id=dag_id, input=folder, output=tmp_path / "out", script=script, warm=warm)
    )
    dag_run = dag.test()
    states = {key: state for key, (state, _) in task_instances(dag_run).items()}
    assert set(states.values()) == {"success"}, states
    return dag_run, states, init_log
