"""Warm worker pools (core/pool.py): found, started, limited, leased, timed out, recovered, stopped.

Every test starts a real pool process and real workers in a pool folder of its own, and kills
whatever is left of them by process id when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_parallelrun.core.errors import EntryScriptLoadError
from airflow_parallelrun.core.minibatch import MiniBatch
from airflow_parallelrun.core.pool import (
    POOL_DIR_ENV,
    LeasedWorker,
    PoolSpec,
    lease_worker,
    stop_pools,
    warm_pool,
)
from airflow_parallelrun.core.runner import WorkerSettings

SCRIPT = """
import os, sys, time

def init():
    with open(os.path.join(os.environ["LOG"], "init.log"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    print(f"init in {os.getpid()} for task {os.environ.get('PARALLELRUN_TASK_PID')}", flush=True)

def run(mini_batch):
    print(f"run in {os.getpid()} for task {os.environ['PARALLELRUN_TASK_PID']}", flush=True)
    if any("slow" in p for p in mini_batch):
        with open(os.path.join(os.environ["LOG"], "slow.log"), "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(3600)
    if any("die" in p for p in mini_batch):
        os._exit(3)
    return [os.path.basename(p) for p in mini_batch]

def shutdown():
    with open(os.path.join(os.environ["LOG"], "shutdown.log"), "a") as f:
        f.write(f"{os.getpid()}\\n")
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead; only its parent has not read its exit status yet.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> bool:
    """Poll ``condition`` until it holds; the timeout only bounds a hang, it is no expectation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def pool_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A pool folder of this test's own (short: it holds Unix sockets); its pools die with the test."""
    folder = Path(tempfile.mkdtemp(prefix="prp-"))
    monkeypatch.setenv(POOL_DIR_ENV, str(folder))
    yield folder
    for pid_file in folder.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def make_spec(tmp_path: Path, pool_dir: Path) -> Callable[..., PoolSpec]:
    (tmp_path / "log").mkdir()

    def make(source: str = SCRIPT, *, size: int = 1, idle: float = 60, output: str = "out") -> PoolSpec:
        script = tmp_path / "entry.py"
        script.write_text(textwrap.dedent(source))
        settings = WorkerSettings(
            entry_script=str(script),
            environment_variables={"LOG": str(tmp_path / "log")},
            output_dir=str(tmp_path / output),
            log_dir=str(tmp_path / output / "logs"),
        )
        return PoolSpec(
            settings=settings, size=size, idle_timeout=idle, output_location=str(tmp_path / output)
        )

    return make


def batch(tmp_path: Path, name: str) -> MiniBatch:
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(name)
    return MiniBatch(index=0, kind="files", files=(str(path),), items=1)


def init_pids(tmp_path: Path) -> list[str]:
    log = tmp_path / "log" / "init.log"
    return log.read_text().split() if log.exists() else []


def pool_pid(pool_dir: Path) -> int:
    (pid_file,) = pool_dir.glob("*.pid")
    return int(pid_file.read_text())


def test_init_runs_once_and_every_lease_after_the_first_gets_the_warm_worker(tmp_path, make_spec):
    spec = make_spec()
    pids, fresh = [], []
    for name in ("a.txt", "b.txt", "c.txt"):
        worker = lease_worker(spec)
        result = worker.run(batch(tmp_path, name), None, "text", timeout=30)
        assert result.ok and result.returned == 1, result
        pids.append(worker.pid)
        fresh.append(worker.fresh)
        worker.shutdown()
    assert fresh == [True, False, False]
    assert len(set(pids)) == 1
    assert init_pids(tmp_path) == [str(pids[0])]


LEASE_IN_A_TASK = """
import json, sys
from airflow_parallelrun.core.minibatch import MiniBatch
from airflow_parallelrun.core.pool import PoolSpec, lease_worker

spec = PoolSpec.from_dict(json.loads(sys.argv[1]))
worker = lease_worker(spec)
mb = MiniBatch(index=0, kind="files", files=(sys.argv[2],), items=1)
result = worker.run(mb, None, "text", timeout=float(sys.argv[3]))
worker.shutdown()
print("RESULT", json.dumps({"ok": result.ok, "pid": worker.pid, "category": result.category}), flush=True)
"""


def run_as_task(spec: PoolSpec, mb: MiniBatch, timeout: float = 30) -> subprocess.Popen[str]:
    """Start a process that leases a worker and runs ``mb``, as a run task instance does."""
    return subprocess.Popen(
        [sys.executable, "-c", LEASE_IN_A_TASK, json.dumps(spec.to_dict()), mb.files[0], str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_tasks_in_separate_processes_share_the_warm_worker_and_each_gets_its_prints(tmp_path, make_spec):
    spec = make_spec()
    outputs, pids = [], []
    for name in ("a.txt", "b.txt"):
        task = run_as_task(spec, batch(tmp_path, name))
        out, err = task.communicate(timeout=60)
        assert task.returncode == 0, err
        result = json.loads(out.split("RESULT ", 1)[1])
        assert result["ok"], result
        outputs.append((task.pid, out))
        pids.append(result["pid"])
    assert pids[0] == pids[1], "the second task did not get the first one's warm worker"
    assert init_pids(tmp_path) == [str(pids[0])]
    first, second = outputs
    # init() printed into the log of the task that started the worker; each run() into its own task's.
    assert f"init in {pids[0]} for task {first[0]}" in first[1]
    assert f"run in {pids[0]} for task {first[0]}" in first[1]
    assert f"run in {pids[0]} for task {second[0]}" in second[1]
    assert "init in" not in second[1] and f"task {first[0]}" not in second[1]


def test_a_pool_runs_at_most_its_size_and_a_lease_waits_for_a_free_worker(tmp_path, make_spec):
    spec = make_spec(size=1)
    first = lease_worker(spec)
    got: list[LeasedWorker] = []
    waiter = threading.Thread(target=lambda: got.append(lease_worker(spec)), daemon=True)
    waiter.start()
    waiter.join(1.5)
    assert not got, "a second worker was leased from a pool of size 1 while the first was out"
    first.shutdown()
    waiter.join(120)
    assert got and got[0].pid == first.pid and not got[0].fresh
    got[0].shutdown()
    assert len(init_pids(tmp_path)) == 1


def test_two_workers_for_two_leases_at_once_in_a_pool_of_two(tmp_path, make_spec):
    spec = make_spec(size=2)
    a, b = lease_worker(spec), lease_worker(spec)
    assert a.pid != b.pid and a.fresh and b.fresh
    a.shutdown()
    b.shutdown()
    c = lease_worker(spec)
    assert c.pid in (a.pid, b.pid) and not c.fresh
    c.shutdown()


def test_a_timeout_kills_the_leased_worker_and_the_next_lease_starts_a_fresh_one(tmp_path, make_spec):
    spec = make_spec()
    worker = lease_worker(spec)
    result = worker.run(batch(tmp_path, "slow.txt"), None, "text", timeout=1)
    assert result.category == "timeout" and "run_invocation_timeout=1s" in result.message
    assert not worker.alive()
    assert wait_until(lambda: not alive(worker.pid)), "the timed-out worker is still running"
    again = lease_worker(spec)
    assert again.fresh and again.pid != worker.pid
    assert again.run(batch(tmp_path, "a.txt"), None, "text", timeout=30).ok
    again.shutdown()
    assert len(init_pids(tmp_path)) == 2


def test_a_worker_that_dies_is_reported_with_its_exit_code(tmp_path, make_spec):
    spec = make_spec()
    worker = lease_worker(spec)
    result = worker.run(batch(tmp_path, "die.txt"), None, "text", timeout=30)
    assert result.category == "worker_died" and "exit code 3" in result.message, result
    again = lease_worker(spec)
    assert again.fresh and again.pid != worker.pid
    again.shutdown()


def test_a_task_killed_in_the_middle_of_run_takes_its_leased_worker_down(tmp_path, make_spec):
    spec = make_spec()
    task = run_as_task(spec, batch(tmp_path, "slow.txt"), timeout=120)
    # run() itself notes that it started: the task is killed inside run(), however busy the machine.
    assert wait_until(lambda: (tmp_path / "log" / "slow.log").exists())
    worker_pid = int(init_pids(tmp_path)[0])
    assert (tmp_path / "log" / "slow.log").read_text().split() == [str(worker_pid)]
    task.send_signal(signal.SIGKILL)
    task.communicate()
    # The lease ended without a healthy release: the worker, busy in run(), is killed, not reused.
    assert wait_until(lambda: not alive(worker_pid)), "the dead task's worker is still running"
    again = lease_worker(spec)
    assert again.fresh and again.pid != worker_pid
    again.shutdown()


def test_a_dead_pool_takes_its_workers_along_and_is_replaced(tmp_path, make_spec, pool_dir):
    spec = make_spec()
    worker = lease_worker(spec)
    worker.shutdown()
    old_pool = pool_pid(pool_dir)
    os.kill(old_pool, signal.SIGKILL)
    assert wait_until(lambda: not alive(worker.pid)), "a worker outlived its pool"
    again = lease_worker(spec)
    assert again.fresh and again.pid != worker.pid
    assert again.run(batch(tmp_path, "a.txt"), None, "text", timeout=30).ok
    again.shutdown()
    assert pool_pid(pool_dir) != old_pool


def test_an_idle_pool_calls_shutdown_in_its_workers_and_exits(tmp_path, make_spec, pool_dir):
    spec = make_spec(idle=1)
    worker = lease_worker(spec)
    pid = pool_pid(pool_dir)  # before the release: a second later, however busy the machine, it is gone
    worker.shutdown()
    assert wait_until(lambda: not alive(pid)), "the idle pool did not exit"
    assert not list(pool_dir.glob("*.sock")) and not list(pool_dir.glob("*.pid"))
    assert (tmp_path / "log" / "shutdown.log").read_text().split() == [str(worker.pid)]
    assert not alive(worker.pid)


def test_stop_pools_stops_the_pools_of_one_output_only(tmp_path, make_spec, pool_dir):
    ours, theirs = make_spec(output="ours"), make_spec(output="theirs")
    for spec in (ours, theirs):
        lease_worker(spec).shutdown()
    pids = {int(p.read_text()): p.name for p in pool_dir.glob("*.pid")}
    assert len(pids) == 2
    assert stop_pools(str(tmp_path / "ours")) == 1
    ours_pid = next(pid for pid, name in pids.items() if name.startswith(ours.key().split("-")[0]))
    assert wait_until(lambda: not alive(ours_pid))
    assert [alive(pid) for pid in pids if pid != ours_pid] == [True]


def test_an_entry_script_that_cannot_load_fails_the_lease_with_the_scripts_error(tmp_path, make_spec):
    spec = make_spec(
        "def init():\n    raise FileNotFoundError('model.pkl is missing')\ndef run(mb):\n    return mb\n"
    )
    with pytest.raises(EntryScriptLoadError) as err:
        lease_worker(spec)
    assert str(err.value) == "init() raised FileNotFoundError: model.pkl is missing"
    assert "raise FileNotFoundError" in err.value.traceback


def test_warming_starts_the_workers_before_any_lease_and_the_first_lease_shows_what_init_printed(
    tmp_path, make_spec
):
    spec = make_spec(size=2)
    assert warm_pool(spec, 2) == 2
    # Both workers import the script and run init() with no task asking yet.
    assert wait_until(lambda: len(init_pids(tmp_path)) == 2)
    warmed = init_pids(tmp_path)
    assert warm_pool(spec, 2) == 0  # the pool is full: warming again starts nothing

    first, second = lease_worker(spec), lease_worker(spec)
    assert {str(first.pid), str(second.pid)} == set(warmed)
    for worker in (first, second):
        # The first task to lease a warmed worker counts its init() and gets what it printed.
        assert worker.fresh and worker.init_seconds > 0
        assert f"init in {worker.pid} for task" in worker.init_output
        assert worker.run(batch(tmp_path, f"{worker.pid}.txt"), None, "text", timeout=30).ok
        worker.shutdown()
    again = lease_worker(spec)
    assert not again.fresh and again.init_output == ""
    again.shutdown()
    assert init_pids(tmp_path) == warmed  # no third init()


def test_warming_a_script_that_cannot_load_leaves_the_error_to_the_lease(tmp_path, make_spec):
    spec = make_spec(
        "def init():\n    raise FileNotFoundError('model.pkl is missing')\ndef run(mb):\n    return mb\n"
    )
    assert warm_pool(spec, 1) == 1
    with pytest.raises(EntryScriptLoadError) as err:
        lease_worker(spec)
    assert str(err.value) == "init() raised FileNotFoundError: model.pkl is missing"
