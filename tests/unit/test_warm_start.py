"""The partition task's warm start (core/execution/warm_start.py): a real pool, started in a thread."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.execution import batch_runner
from airflow_parallelrun.core.execution.pool import POOL_DIR_ENV, stop_pools
from airflow_parallelrun.core.execution.warm_start import WarmStart
from airflow_parallelrun.core.spec import RunSpec

SCRIPT = """
import os

def init():
    with open(os.environ["INIT_LOG"], "a") as f:
        f.write(f"{os.getpid()}\\n")

def run(mini_batch):
    return list(mini_batch)
"""


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunSpec]:
    folder = Path(tempfile.mkdtemp(prefix="prw-"))  # short: it holds Unix sockets
    monkeypatch.setenv(POOL_DIR_ENV, str(folder))
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    config = ParallelRunConfig(
        entry_script=str(script),
        process_count_per_node=2,
        environment_variables={"INIT_LOG": str(tmp_path / "init.log")},
    )
    run = RunSpec(output_path=str(tmp_path / "out"), config=config, entry_script=str(script))
    yield run
    stop_pools(run.layout().output.url)
    for pid_file in folder.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_one_worker_starts_at_once_and_finish_warms_one_per_run_task_up_to_the_pool_size(
    spec: RunSpec, tmp_path: Path
) -> None:
    warm = WarmStart(spec, "run-key")
    deadline = time.monotonic() + 60  # only bounds a hang: the worker's init() runs within seconds
    while time.monotonic() < deadline and not (tmp_path / "init.log").exists():
        time.sleep(0.05)
    assert len((tmp_path / "init.log").read_text().split()) == 1  # before finish() was called
    assert warm.finish(5) == 2  # the pool's size, not the 5 run tasks
    while time.monotonic() < deadline and len((tmp_path / "init.log").read_text().split()) < 2:
        time.sleep(0.05)
    assert len(set((tmp_path / "init.log").read_text().split())) == 2


def test_a_single_run_task_gets_one_worker(spec: RunSpec) -> None:
    assert WarmStart(spec, "run-key").finish(1) == 1


def test_an_error_of_ours_in_the_thread_is_raised_by_finish(
    spec: RunSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the partition task raised when it started the workers itself, it still raises."""

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("no interpreter today")

    monkeypatch.setattr(batch_runner, "worker_python", broken)
    with pytest.raises(RuntimeError, match="no interpreter today"):
        WarmStart(spec, "run-key").finish(2)
