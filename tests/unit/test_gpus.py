"""GPUs as Azure assigns them: worker ``i`` of a node sees GPU ``i % n`` in ``CUDA_VISIBLE_DEVICES``.

This machine has no GPU, so the assignment is tested through ``gpus_per_node`` and through a node
whose Airflow worker was given some devices (``CUDA_VISIBLE_DEVICES`` where the task runs): each
real worker process writes down the devices it was given. Without either, nothing is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.execution import gpus
from airflow_parallelrun.core.execution.batch_runner import pool_spec_of
from airflow_parallelrun.core.execution.pool import POOL_DIR_ENV, lease_worker
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.spec import RunSpec

REPO = Path(__file__).resolve().parents[2]

# Each worker writes "<pid> <devices>" once, when it starts.
SCRIPT = """
import os

def init():
    with open(os.environ["GPU_LOG"], "a") as f:
        f.write(f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}\\n")

def run(mini_batch):
    return [os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>") for _ in mini_batch]
"""


@pytest.fixture
def pool_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="prg-"))
    monkeypatch.setenv(POOL_DIR_ENV, str(folder))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield folder
    for pid_file in folder.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def make_spec(tmp_path: Path, **config: object) -> RunSpec:
    (tmp_path / "in").mkdir(exist_ok=True)
    for i in range(2):
        (tmp_path / "in" / f"f{i}.txt").write_text("x")
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    env = {"GPU_LOG": str(tmp_path / "gpus.log"), **config.pop("environment_variables", {})}  # type: ignore[dict-item]
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(
            entry_script="x.py", mini_batch_size="1", environment_variables=env, **config
        ),  # type: ignore[arg-type]
        entry_script=str(script),
    )
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    return spec


def devices_of(tmp_path: Path) -> dict[int, str]:
    log = tmp_path / "gpus.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return {int(pid): devices for pid, devices in (line.split() for line in lines)}


def test_each_warm_worker_gets_its_own_gpu_and_a_replaced_one_takes_the_freed_slots_gpu(
    tmp_path: Path, pool_dir: Path
) -> None:
    pool = pool_spec_of(make_spec(tmp_path, process_count_per_node=3, gpus_per_node=2))
    assert pool is not None and pool.gpus_per_node == 2
    leased = [lease_worker(pool) for _ in range(3)]
    given = devices_of(tmp_path)
    assert sorted(given[w.pid] for w in leased if w.pid is not None) == ["0", "0", "1"]
    # A worker on GPU 0 dies; the worker started in its place takes its slot, and so GPU 0 again:
    # numbered by start (the 4th worker), it would have gone to GPU 1, beside a live one.
    dying = next(w for w in leased if given[w.pid or 0] == "0")
    dying.kill()
    again = lease_worker(pool)
    assert again.pid not in given
    assert devices_of(tmp_path)[again.pid or 0] == "0"
    for worker in [*leased, again]:
        worker.shutdown()


def test_the_devices_the_nodes_airflow_worker_was_given_are_shared_out(
    tmp_path: Path, pool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    pool = pool_spec_of(make_spec(tmp_path, process_count_per_node=2))
    assert pool is not None
    leased = [lease_worker(pool) for _ in range(2)]
    assert sorted(devices_of(tmp_path)[w.pid or 0] for w in leased) == ["3", "5"]
    for worker in leased:
        worker.shutdown()


def test_without_a_gpu_nothing_is_set_and_the_run_succeeds(tmp_path: Path, pool_dir: Path) -> None:
    if gpus.count_gpus():
        pytest.skip("this node has GPUs: the case of a node without one cannot run here")
    spec = make_spec(tmp_path, process_count_per_node=2)
    statuses = steps.run_mini_batches([0, 1], spec)
    assert all(s.succeeded for s in statuses), statuses
    assert set(devices_of(tmp_path).values()) == {"<unset>"}
    assert not list(pool_dir.glob("gpu-slot-*"))


def test_the_runs_own_cuda_visible_devices_wins(tmp_path: Path, pool_dir: Path) -> None:
    spec = make_spec(
        tmp_path,
        process_count_per_node=1,
        gpus_per_node=4,
        environment_variables={"CUDA_VISIBLE_DEVICES": "7"},
    )
    assert steps.run_mini_batch(0, spec).succeeded
    assert set(devices_of(tmp_path).values()) == {"7"}


HOLD_SLOT = """
import sys
from airflow_parallelrun.core.execution.gpus import claim_slot
print(claim_slot(sys.argv[1], 2), flush=True)
sys.stdin.read()
"""


def test_a_tasks_own_worker_gets_the_gpu_of_the_lowest_slot_no_other_task_holds(
    tmp_path: Path, pool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpus, "_HELD", None)
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_SLOT, str(pool_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "0"
        spec = make_spec(tmp_path, warm_workers=False, process_count_per_node=2, gpus_per_node=2)
        assert steps.run_mini_batch(0, spec).succeeded
        assert set(devices_of(tmp_path).values()) == {"1"}
    finally:
        other.communicate("", timeout=30)
        if gpus._HELD is not None:
            os.close(gpus._HELD[1])
