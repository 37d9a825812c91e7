"""A worker process never outlives the task process that started it, even when that one is SIGKILLed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_worker_busy_in_run_exits_when_its_task_process_is_killed(tmp_path: Path) -> None:
    # Busy in run(), the worker is not reading its socket, so it cannot see the parent go that way.
    script = tmp_path / "score.py"
    started = tmp_path / "run-started"
    script.write_text(
        "import pathlib, time\n"
        "def run(mini_batch):\n"
        f"    pathlib.Path({str(started)!r}).touch()\n"
        "    time.sleep(3600)\n"
        "    return mini_batch\n"
    )
    parent_code = textwrap.dedent(
        f"""
        from airflow_parallelrun.core.inputs.minibatch import MiniBatch
        from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings
        worker = WorkerProcess(WorkerSettings(entry_script={str(script)!r}, working_dir={str(tmp_path)!r}))
        worker.start()
        print(worker.process.pid, flush=True)
        worker.run(MiniBatch(index=0, kind="files", files=("a",)), None, "text", timeout=3600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        # The deadlines only bound a hang: the worker sees its parent gone within about a second.
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists() and _running(worker_pid)
        parent.kill()
        parent.wait(timeout=120)
        deadline = time.monotonic() + 120
        while _running(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(worker_pid), "the worker outlived its killed parent"
    finally:
        parent.kill()


def test_kill_live_workers_takes_down_the_workers_of_this_process(tmp_path: Path) -> None:
    """What the run task's on_kill calls when Airflow stops the task with SIGTERM."""
    from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings, kill_live_workers

    script = tmp_path / "score.py"
    script.write_text("def run(mini_batch):\n    return mini_batch\n")
    worker = WorkerProcess(WorkerSettings(entry_script=str(script), working_dir=str(tmp_path)))
    worker.start()
    assert worker.process is not None
    pid = worker.process.pid
    assert _running(pid)
    assert kill_live_workers() == 1
    assert not _running(pid)
    assert kill_live_workers() == 0


def test_a_kill_during_run_ends_the_try_as_worker_died_not_an_exception(tmp_path: Path) -> None:
    """on_kill runs kill_live_workers while run() waits for its reply; the try must end cleanly."""
    import threading

    from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings, kill_live_workers
    from airflow_parallelrun.core.inputs.minibatch import MiniBatch

    script = tmp_path / "score.py"
    in_run = tmp_path / "in-run"
    script.write_text(
        "import pathlib, time\n"
        "def run(mini_batch):\n"
        f"    pathlib.Path({str(in_run)!r}).touch()\n"
        "    time.sleep(3600)\n"
        "    return mini_batch\n"
    )
    worker = WorkerProcess(WorkerSettings(entry_script=str(script), working_dir=str(tmp_path)))
    worker.start()

    def kill_once_in_run() -> None:
        # run() itself says it started: the kill lands inside it, however busy the machine.
        deadline = time.monotonic() + 120
        while not in_run.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_live_workers()

    killer = threading.Thread(target=kill_once_in_run)
    killer.start()
    started = time.monotonic()
    result = worker.run(MiniBatch(index=0, kind="files", files=("a",)), None, "text", timeout=600)
    killer.join()
    assert in_run.exists()
    assert time.monotonic() - started < 600  # ended by the kill, not by the timeout
    assert not result.ok and result.category == "worker_died"
