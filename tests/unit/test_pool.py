"""Warm worker pools (core/execution/pool/): found, started, limited, leased, timed out, recovered, stopped.

Every test starts a real pool process and real workers in a pool folder of its own, and kills
whatever is left of them by process id when it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from airflow_parallelrun.core.errors import EntryScriptLoadError
from airflow_parallelrun.core.execution.pool import (
    POOL_DIR_ENV,
    LeasedWorker,
    PoolSpec,
    PoolUnavailable,
    lease_worker,
    stop_pools,
    sweep_leftovers,
    warm_pool,
)
from airflow_parallelrun.core.execution.runner import WorkerSettings
from airflow_parallelrun.core.inputs.minibatch import MiniBatch

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
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.execution.pool import PoolSpec, lease_worker

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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_the_pool_process_runs_as_the_pool_package(make_spec, pool_dir):
    """What ``ps`` shows of a pool, and what the README and the Celery test look for."""
    lease_worker(make_spec()).shutdown()
    cmdline = Path(f"/proc/{pool_pid(pool_dir)}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:3] == [b"-m", b"airflow_parallelrun.core.execution.pool"], cmdline


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


@pytest.mark.slow
def test_an_idle_pool_calls_shutdown_in_its_workers_and_exits(tmp_path, make_spec, pool_dir):
    spec = make_spec(idle=1)
    worker = lease_worker(spec)
    pid = pool_pid(pool_dir)  # before the release: a second later, however busy the machine, it is gone
    worker.shutdown()
    assert wait_until(lambda: not alive(pid)), "the idle pool did not exit"
    # Nothing of the pool is left: no socket, process id, lock, log or workers' folders.
    assert sorted(os.listdir(pool_dir)) == []
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


# -- idle means no lease, no waiter and no worker starting ---------------------------------------

SLOW_INIT = """
import os, time

def init():
    with open(os.path.join(os.environ["LOG"], "init.log"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(5)

def run(mini_batch):
    return mini_batch
"""


@pytest.mark.slow
def test_a_pool_does_not_stop_as_idle_while_a_worker_is_in_init_or_a_lease_waits(tmp_path, make_spec):
    # init() takes far longer than worker_idle_timeout: were the pool to count that time as idle,
    # it would stop, and the waiting lease would start a second worker with a second init().
    spec = make_spec(SLOW_INIT, size=1, idle=0.5)
    assert warm_pool(spec, 1) == 1
    worker = lease_worker(spec)  # waits for the one worker, still in init()
    assert worker.fresh
    assert worker.run(batch(tmp_path, "a.txt"), None, "text", timeout=30).ok
    worker.shutdown()
    assert init_pids(tmp_path) == [str(worker.pid)]


@pytest.mark.slow
def test_a_pool_warming_a_worker_does_not_stop_as_idle_before_its_init_ends(tmp_path, make_spec):
    # No task asks yet: only the worker in init() keeps the pool up. A pool that stopped would
    # take the worker with it (it watches its parent) before its init() could end.
    spec = make_spec(
        SLOW_INIT.replace(
            "time.sleep(5)", "time.sleep(3)\n    open(os.environ['LOG'] + '/init-done', 'w').close()"
        ),
        idle=0.5,
    )
    assert warm_pool(spec, 1) == 1
    assert wait_until(lambda: (tmp_path / "log" / "init-done").exists(), 60), "the pool stopped during init()"
    assert len(init_pids(tmp_path)) == 1


VERY_SLOW_INIT = """
import os, time

def init():
    with open(os.path.join(os.environ["LOG"], "init.log"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(120)
    open(os.path.join(os.environ["LOG"], "init-done"), "w").close()

def run(mini_batch):
    return mini_batch
"""


def test_a_stop_request_does_not_wait_for_a_worker_still_in_init(tmp_path, make_spec, pool_dir):
    spec = make_spec(VERY_SLOW_INIT, output="ours")
    assert warm_pool(spec, 1) == 1
    assert wait_until(lambda: len(init_pids(tmp_path)) == 1, 30)
    pid, worker_pid = pool_pid(pool_dir), int(init_pids(tmp_path)[0])
    assert stop_pools(str(tmp_path / "ours")) == 1
    assert wait_until(lambda: not alive(pid), 60), "the stopped pool waited for init()"
    assert not alive(worker_pid) and not (tmp_path / "log" / "init-done").exists()
    assert sorted(os.listdir(pool_dir)) == [], [p.read_text() for p in pool_dir.glob("*.log")]


# -- only this user's pools, folders and sockets --------------------------------------------------

NOBODY = 65534


def test_a_pool_folder_that_is_a_symbolic_link_is_refused(tmp_path, make_spec, pool_dir, monkeypatch):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = pool_dir / "link"
    link.symlink_to(target)
    monkeypatch.setenv(POOL_DIR_ENV, str(link))
    with pytest.raises(PoolUnavailable, match="is a symbolic link; remove it, or set PARALLELRUN_POOL_DIR"):
        lease_worker(make_spec())
    assert list(target.iterdir()) == []


def test_a_pool_folder_of_another_user_is_refused(make_spec, pool_dir):
    os.chown(pool_dir, NOBODY, NOBODY)
    with pytest.raises(PoolUnavailable, match=f"belongs to uid {NOBODY}, not to this user"):
        lease_worker(make_spec())
    assert list(pool_dir.iterdir()) == []


@pytest.mark.parametrize("mode", [0o770, 0o702])
def test_a_pool_folder_others_can_write_is_refused(make_spec, pool_dir, mode):
    pool_dir.chmod(mode)
    with pytest.raises(PoolUnavailable, match=f"can be written by other users \\(mode {mode:o}\\)"):
        lease_worker(make_spec())
    assert list(pool_dir.iterdir()) == []


FOREIGN_POOL = """
import os, socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
os.setuid(int(sys.argv[2]))  # listen() records who serves the socket: another user
listener.listen(1)
print("listening", flush=True)
listener.settimeout(30)
client, _ = listener.accept()
client.settimeout(10)
received = b""
try:
    while chunk := client.recv(4096):
        received += chunk
except OSError:
    pass
print(len(received), flush=True)
"""


def test_a_pool_socket_served_by_another_user_is_refused_before_anything_is_sent(make_spec, pool_dir):
    spec = make_spec()
    path = str(pool_dir / f"{spec.key()}.sock")
    server = subprocess.Popen(
        [sys.executable, "-c", FOREIGN_POOL, path, str(NOBODY)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "listening\n"
        with pytest.raises(PoolUnavailable, match=f"served by uid {NOBODY}, not by this user"):
            lease_worker(spec)
        out, _ = server.communicate(timeout=30)
        # The task sent nothing: neither a request nor its stdout and stderr.
        assert out.strip() == "0"
    finally:
        server.kill()
        server.wait()


def as_another_user(uid: int, action: Callable[[], bytes]) -> bytes:
    """Return what ``action`` returns when run in a child process that has become user ``uid``.

    A fork, not a new interpreter: that user may not be allowed to run this one.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            os.setuid(uid)
            os.write(write_end, action())
        except BaseException as exc:
            os.write(write_end, f"error: {exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def test_a_pool_hangs_up_on_a_client_of_another_user(make_spec, pool_dir):
    spec = make_spec()
    first = lease_worker(spec)
    first.shutdown()
    pid = pool_pid(pool_dir)
    # Let another user reach the socket at all, as a careless folder mode would.
    pool_dir.chmod(0o711)
    socket_path = pool_dir / f"{spec.key()}.sock"
    socket_path.chmod(0o777)

    def ask_the_pool_to_stop() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(socket_path))
            data = json.dumps({"cmd": "stop"}).encode()
            sock.settimeout(10)
            try:
                sock.sendall(struct.pack("!I", len(data)) + data)
                return b"reply: " + sock.recv(4096)
            except (BrokenPipeError, ConnectionResetError):  # hung up on, before or after it spoke
                return b"reply: "

    assert as_another_user(NOBODY, ask_the_pool_to_stop) == b"reply: ", "the pool answered another user"
    # Its "stop" was not obeyed: the same pool still lends the same warm worker.
    again = lease_worker(spec)
    assert pool_pid(pool_dir) == pid and again.pid == first.pid and not again.fresh
    again.shutdown()


# -- errors: the framework's are told as such, with their traceback -------------------------------


def test_a_worker_the_pool_cannot_start_is_a_framework_error_not_the_scripts(tmp_path, pool_dir):
    (tmp_path / "entry.py").write_text("def run(mini_batch):\n    return mini_batch\n")
    # An environment value that is not a string breaks the worker before the script is loaded.
    settings = WorkerSettings(entry_script=str(tmp_path / "entry.py"), environment_variables={"N": 1})  # type: ignore[dict-item]
    spec = PoolSpec(settings=settings, size=1, idle_timeout=60, output_location=str(tmp_path / "out"))
    assert warm_pool(spec, 1) == 1
    with pytest.raises(PoolUnavailable) as err:
        lease_worker(spec)
    message = str(err.value)
    assert "could not start a worker" in message and "not of the entry script" in message
    assert "Traceback" in message and "TypeError" in message
    (log_file,) = pool_dir.glob("*.log")
    assert wait_until(
        lambda: "warming worker 1 failed (an error of airflow-parallelrun)" in log_file.read_text()
    )
    assert "Traceback" in log_file.read_text()


@pytest.mark.slow
def test_a_pool_that_logged_a_warning_keeps_its_log_when_it_stops(tmp_path, make_spec, pool_dir):
    spec = make_spec(
        "def run(mb):\n    return mb\ndef shutdown():\n    raise RuntimeError('could not flush the cache')\n",
        idle=0.5,
    )
    lease_worker(spec).shutdown()
    pid = pool_pid(pool_dir)
    assert wait_until(lambda: not alive(pid)), "the idle pool did not exit"
    (log_file,) = pool_dir.iterdir()
    assert log_file.suffix == ".log"
    assert "shutdown() raised RuntimeError: could not flush the cache" in log_file.read_text()


# -- leftovers of killed tasks and pools -------------------------------------------------------------

TWO_DAYS_AGO = time.time() - 2 * 24 * 3600


def age(path: Path) -> Path:
    """Date ``path`` and everything under it two days back, without following links."""
    for inner in sorted(path.rglob("*"), reverse=True) if path.is_dir() and not path.is_symlink() else []:
        os.utime(inner, (TWO_DAYS_AGO, TWO_DAYS_AGO), follow_symlinks=False)
    os.utime(path, (TWO_DAYS_AGO, TWO_DAYS_AGO), follow_symlinks=False)
    return path


def test_sweep_removes_only_this_users_old_leftovers_and_never_follows_links(tmp_path, pool_dir, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    def folder(path: Path, *files: str) -> Path:
        path.mkdir()
        for name in files:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text("x")
        return path

    old_scratch = age(folder(tmp / "parallelrun-abc", "work/a.txt", "mb-000001.csv"))
    old_merge = tmp / "parallelrun-q1.tmp"
    old_merge.write_text("half a merge")
    age(old_merge)
    young = folder(tmp / "parallelrun-young", "a.txt")
    busy = folder(tmp / "parallelrun-busy", "old.txt", "new.txt")
    age(busy)
    os.utime(busy / "new.txt")  # one file still written to: a live task's
    outside = age(folder(tmp_path / "outside", "keep.txt"))
    link = tmp / "parallelrun-link"
    link.symlink_to(outside)
    age(link)
    foreign = age(folder(tmp / "parallelrun-theirs", "x.txt"))
    os.chown(foreign, NOBODY, NOBODY)
    pools = age(folder(tmp / "parallelrun-pools-123"))
    other = tmp / "someone-elses.tmp"
    other.write_text("x")
    age(other)

    dead, live = "a" * 12 + "-" + "b" * 12, "c" * 12 + "-" + "d" * 12
    for key in (dead, live):
        for suffix in (".sock", ".log", ".pid", ".lock"):
            (pool_dir / f"{key}{suffix}").write_text("")
        folder(pool_dir / f"{key}.d", "w1/work/model.bin")
        for path in pool_dir.glob(f"{key}*"):
            age(path)
    unrelated = pool_dir / "notes.txt"
    unrelated.write_text("x")
    age(unrelated)
    # A running pool holds its process id file locked.
    with open(pool_dir / f"{live}.pid") as pid_file:
        fcntl.flock(pid_file, fcntl.LOCK_EX)
        removed = sweep_leftovers()

    gone = {old_scratch, old_merge} | {
        pool_dir / f"{dead}{s}" for s in (".sock", ".log", ".pid", ".lock", ".d")
    }
    assert set(map(Path, removed)) == gone
    assert not any(path.exists() for path in gone)
    for kept in (
        young,
        busy / "old.txt",
        link,
        outside / "keep.txt",
        foreign / "x.txt",
        pools,
        other,
        unrelated,
    ):
        assert os.path.lexists(kept), kept
    assert sorted(p.name for p in pool_dir.glob(f"{live}*")) == [
        f"{live}{s}" for s in (".d", ".lock", ".log", ".pid", ".sock")
    ]


def test_a_starting_pool_sweeps_old_leftovers(tmp_path, make_spec, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the pool process's temporary folder
    left = tmp / "parallelrun-killed"
    left.mkdir()
    (left / "input.csv").write_text("x")
    age(left)
    lease_worker(make_spec()).shutdown()
    assert wait_until(lambda: not left.exists()), "the pool did not sweep a two-day-old scratch folder"


def test_the_pool_spec_and_its_environment_never_reach_the_pool_folder(tmp_path, make_spec, pool_dir):
    secret = "s3cr3t-token-value"
    spec = make_spec()
    env = {**spec.settings.environment_variables, "TOKEN": secret}
    spec = replace(spec, settings=replace(spec.settings, environment_variables=env))
    worker = lease_worker(spec)
    assert worker.run(batch(tmp_path, "a.txt"), None, "text", timeout=30).ok
    worker.shutdown()
    files = [p for p in pool_dir.rglob("*") if p.is_file()]
    assert files, "the pool wrote nothing at all: this test would prove nothing"
    assert [str(p) for p in files if secret.encode() in p.read_bytes()] == []
