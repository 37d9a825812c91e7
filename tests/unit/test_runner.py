"""Tests for the worker process that hosts an entry script (core/execution/runner.py and
core/execution/worker.py).

Every test starts a real worker process; the entry scripts are files under ``scripts/`` or small
scripts written into ``tmp_path`` next to the test that needs them.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from airflow_parallelrun.core.errors import EntryScriptLoadError
from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings
from airflow_parallelrun.core.inputs.minibatch import MiniBatch, TabularPiece

SCRIPTS = Path(__file__).resolve().parent / "scripts"
ENGINE_FRAMES = "airflow_parallelrun/core/execution/worker.py"
# Timing in these tests bounds a hang, never the expectation: a stuck run() sleeps far longer than
# any busy machine delays a worker, and a timeout that must not fire is longer than the test's own.
STUCK = 3600
RUN_TIMEOUT = 2.0
RUN_TIMEOUT_NEVER = 600.0


def write_script(folder: Path, source: str, name: str = "entry.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def line_of(path: Path, text: str) -> int:
    """Return the 1-based number of the first line of ``path`` that contains ``text``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def files_batch(folder: Path, names: list[str], index: int = 0) -> MiniBatch:
    """Create one small text file per name in ``folder`` and return a files mini-batch of them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.write_text(f"content of {name}\n")
        paths.append(str(path))
    return MiniBatch(index=index, kind="files", files=tuple(paths), items=len(paths))


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Make workers for a script; every worker made is killed when the test ends."""
    made: list[WorkerProcess] = []

    def make(script: Path, **settings) -> WorkerProcess:
        settings.setdefault("working_dir", str(tmp_path / "work"))
        os.makedirs(settings["working_dir"], exist_ok=True)
        w = WorkerProcess(WorkerSettings(entry_script=str(script), **settings))
        made.append(w)
        return w

    yield make
    for w in made:
        w.kill()


def read_part(path: Path) -> list[dict]:
    return pd.read_csv(path).to_dict("records")


# --- the entry-script contract ------------------------------------------------------------------


def test_init_runs_once_per_process_before_every_run_and_shutdown_runs_at_the_end(tmp_path, worker):
    marker = tmp_path / "shutdown.txt"
    w = worker(SCRIPTS / "recording_script.py", environment_variables={"SHUTDOWN_MARKER": str(marker)})
    w.start()
    batches = [files_batch(tmp_path / "in", [f"f{i}a.txt", f"f{i}b.txt"], index=i) for i in range(3)]
    rows = []
    for mb in batches:
        part = tmp_path / f"{mb.id}.csv"
        result = w.run(mb, str(part), "csv", timeout=30)
        assert result.ok, result
        assert (result.items, result.returned) == (2, 2)
        rows.append(read_part(part))
        assert not marker.exists(), "shutdown() must not run between mini-batches"

    assert [[r["item"] for r in part] for part in rows] == [list(mb.files) for mb in batches]
    flat = [r for part in rows for r in part]
    assert {r["init_calls"] for r in flat} == {1}
    assert [part[0]["run_calls"] for part in rows] == [1, 2, 3]
    assert {r["model"] for r in flat} == {"loaded-in-init"}
    assert len({r["pid"] for r in flat}) == 1, "all mini-batches ran in one process"
    assert {r["input_type"] for r in flat} == {"list"}
    assert all(r["local_file"] for r in flat)

    shutdown = w.shutdown()
    assert shutdown is not None and shutdown.ok
    assert marker.read_text() == f"pid={flat[0]['pid']} init_calls=1 run_calls=3\n"
    assert not w.alive()


def test_run_receives_a_dataframe_for_a_tabular_piece(tmp_path, worker):
    table = tmp_path / "table.csv"
    table.write_text("id,x\n1,0.5\n2,1.5\n3,2.5\n")
    piece = TabularPiece(path=str(table), format="csv", unit="file")
    mb = MiniBatch(index=0, kind="tabular", piece=piece, items=3)
    marker = str(tmp_path / "shutdown.txt")
    w = worker(SCRIPTS / "recording_script.py", environment_variables={"SHUTDOWN_MARKER": marker})
    w.start()
    part = tmp_path / "part.csv"
    result = w.run(mb, str(part), "csv", timeout=30)
    assert result.ok, result
    assert (result.items, result.returned) == (3, 3)
    rows = read_part(part)
    assert {r["input_type"] for r in rows} == {"DataFrame"}
    assert {r["columns"] for r in rows} == {"id|x"}
    assert [json.loads(r["item"]) for r in rows] == [
        {"id": 1, "x": 0.5},
        {"id": 2, "x": 1.5},
        {"id": 3, "x": 2.5},
    ]


def test_init_and_shutdown_are_optional(tmp_path, worker):
    w = worker(SCRIPTS / "run_only_script.py")
    w.start()
    assert w.init_seconds == 0.0
    mb = files_batch(tmp_path / "in", ["a.txt", "b.txt"])
    part = tmp_path / "part.txt"
    result = w.run(mb, str(part), "text", timeout=30)
    assert result.ok, result
    assert part.read_text() == "content of a.txt\ncontent of b.txt\n"
    shutdown = w.shutdown()
    assert shutdown is not None and shutdown.ok, shutdown
    assert not w.alive()


def test_azure_style_script_sees_arguments_environment_and_entry_script_folders(tmp_path, worker, capfd):
    output_dir, log_dir = tmp_path / "out", tmp_path / "out" / "logs"
    w = worker(
        SCRIPTS / "azure_style_script.py",
        arguments=("--model_name", "digits", "--threshold", "0.7", "--azure_extra", "ignored"),
        environment_variables={"GREETING": "hello"},
        output_dir=str(output_dir),
        log_dir=str(log_dir),
    )
    w.start()
    mb = files_batch(tmp_path / "in", ["a.png", "b.png"], index=4)
    part = tmp_path / "part.csv"
    result = w.run(mb, str(part), "csv", timeout=30)
    assert result.ok, result
    rows = read_part(part)
    assert [r["file"] for r in rows] == ["a.png", "b.png"]
    row = rows[0]
    assert (row["model_name"], row["threshold"]) == ("digits", 0.7)
    assert row["unknown_args"] == "--azure_extra ignored"
    assert row["argv"] == "--model_name digits --threshold 0.7 --azure_extra ignored"
    assert row["greeting"] == "hello"
    assert (row["output_dir"], row["log_dir"]) == (str(output_dir), str(log_dir))
    assert row["mini_batch_id"] == "mb-000004"
    assert (log_dir / "init.log").read_text() == "model_name=digits\n"
    w.shutdown()
    err = capfd.readouterr().err
    assert "entry_script: init: model_name=digits threshold=0.7" in err
    assert "entry_script: run: 2 files in mb-000004" in err


def test_worker_process_does_not_import_airflow(tmp_path, worker):
    """``from airflow_parallelrun import EntryScript`` in a script must not pull Airflow into the worker."""
    w = worker(
        SCRIPTS / "azure_style_script.py",
        arguments=("--model_name", "m"),
        output_dir=str(tmp_path / "out"),
        log_dir=str(tmp_path / "logs"),
    )
    w.start()
    part = tmp_path / "part.csv"
    assert w.run(files_batch(tmp_path / "in", ["a.png"]), str(part), "csv", timeout=30).ok
    assert read_part(part)[0]["airflow_loaded"] is False


# --- scripts that cannot load -------------------------------------------------------------------


def start_error(w: WorkerProcess) -> EntryScriptLoadError:
    with pytest.raises(EntryScriptLoadError) as info:
        w.start()
    assert not w.alive(), "a worker whose script failed to load must be stopped"
    assert info.value.category == "entry_script_load"
    return info.value


def test_script_without_run_fails_to_start(tmp_path, worker):
    script = write_script(tmp_path, "def init():\n    pass\n")
    err = start_error(worker(script))
    assert "has no run(mini_batch) function" in str(err)
    assert str(script) in str(err)


def test_syntax_error_names_the_script_file_and_line(tmp_path, worker):
    script = write_script(
        tmp_path,
        """
        def init():
            pass

        def run(mini_batch)
            return mini_batch
    """,
    )
    err = start_error(worker(script))
    assert "failed to import: SyntaxError" in str(err)
    assert f'File "{script}", line 4' in err.traceback


def test_import_error_shows_the_scripts_import_line(tmp_path, worker):
    script = write_script(
        tmp_path,
        """
        import os
        import module_that_does_not_exist_anywhere

        def run(mini_batch):
            return mini_batch
    """,
    )
    err = start_error(worker(script))
    assert "failed to import: ModuleNotFoundError" in str(err)
    assert "module_that_does_not_exist_anywhere" in str(err)
    assert f'File "{script}", line 2' in err.traceback
    assert ENGINE_FRAMES not in err.traceback


def test_init_that_raises_fails_to_start_with_the_scripts_traceback(tmp_path, worker):
    script = write_script(
        tmp_path,
        """
        def load_model():
            raise FileNotFoundError("model.pkl is missing")

        def init():
            global model
            model = load_model()

        def run(mini_batch):
            return mini_batch
    """,
    )
    err = start_error(worker(script))
    assert str(err) == "init() raised FileNotFoundError: model.pkl is missing"
    tb = err.traceback
    assert f'File "{script}", line {line_of(script, "model = load_model()")}, in init' in tb
    assert f'File "{script}", line {line_of(script, "raise FileNotFoundError")}, in load_model' in tb
    assert ENGINE_FRAMES not in err.traceback


def test_worker_that_dies_in_init_fails_to_start(tmp_path, worker):
    script = write_script(
        tmp_path,
        """
        import os

        def init():
            os._exit(5)

        def run(mini_batch):
            return mini_batch
    """,
    )
    err = start_error(worker(script))
    assert "died while loading the entry script" in str(err)


# --- run() failing or returning the wrong thing -------------------------------------------------


def test_run_that_raises_reports_the_scripts_traceback_and_the_worker_goes_on(tmp_path, worker):
    script = write_script(
        tmp_path,
        """
        import os

        def run(mini_batch):
            if any("bad" in os.path.basename(p) for p in mini_batch):
                raise ValueError("cannot score this file")
            return list(mini_batch)
    """,
    )
    w = worker(script)
    w.start()
    pid = w.process.pid
    result = w.run(files_batch(tmp_path / "in", ["ok.txt", "bad.txt"]), None, "text", timeout=30)
    assert not result.ok
    assert result.category == "entry_script"
    assert result.message == "run() raised ValueError: cannot score this file"
    assert result.items == 2
    assert f'File "{script}", line {line_of(script, "raise ValueError")}, in run' in result.traceback
    assert ENGINE_FRAMES not in result.traceback
    # An exception is not a crash: the same process, with its loaded model, runs the next mini-batch.
    again = w.run(files_batch(tmp_path / "in", ["ok2.txt"], index=1), None, "text", timeout=30)
    assert again.ok and again.returned == 1
    assert w.process.pid == pid and w.alive()


@pytest.mark.parametrize(
    ("returned", "type_name"),
    [("None", "NoneType"), ("{'a': 1}", "dict"), ("'a.png: 3'", "str")],
)
def test_run_returning_neither_list_nor_dataframe_is_a_run_output_error(
    tmp_path, worker, returned, type_name
):
    script = write_script(
        tmp_path,
        f"""
        def run(mini_batch):
            return {returned}
    """,
    )
    w = worker(script)
    w.start()
    part = tmp_path / "part.txt"
    result = w.run(files_batch(tmp_path / "in", ["a.png"]), str(part), "text", timeout=30)
    assert not result.ok
    assert result.category == "run_output"
    assert f"run() returned {type_name}" in result.message
    assert "expected a list" in result.message and "DataFrame" in result.message
    assert not part.exists()


# --- timeouts and dying workers -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "stuck",
    # libc sleep() never returns to Python for a signal
    ["time.sleep(STUCK)", "ctypes.CDLL(None).sleep(STUCK)"],
    ids=["python-sleep", "libc-sleep"],
)
def test_run_longer_than_the_timeout_is_killed(tmp_path, worker, stuck):
    script = write_script(
        tmp_path,
        f"""
        import ctypes
        import time

        STUCK = {STUCK}

        def run(mini_batch):
            {stuck}
            return list(mini_batch)
    """,
    )
    w = worker(script)
    w.start()
    started = time.monotonic()
    result = w.run(files_batch(tmp_path / "in", ["a.txt", "b.txt"]), None, "text", timeout=1)
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.category == "timeout"
    assert "run_invocation_timeout=1s" in result.message
    assert result.items == 2
    # It waited for the timeout, and was killed long before run() would have returned by itself
    # (the upper bound only tells a kill from a wait for run(), however busy the machine).
    assert 1 <= elapsed < STUCK
    assert 1 <= result.run_seconds < STUCK
    assert not w.alive()


@pytest.mark.slow
def test_the_timeout_bounds_run_itself_not_the_writing_of_its_results(tmp_path, worker):
    # run() returns at once; writing its results takes longer than the whole timeout (the first
    # result's str() sleeps past it, so the write outlasts the timeout however busy the machine).
    script = write_script(
        tmp_path,
        """
        import time

        class SlowToWrite:
            slept = False

            def __init__(self, text):
                self.text = text

            def __str__(self):
                if not SlowToWrite.slept:
                    SlowToWrite.slept = True
                    time.sleep(WRITE_SECONDS)
                return self.text

        def run(mini_batch):
            return [SlowToWrite(path.rsplit("/", 1)[-1]) for path in mini_batch]
    """.replace("WRITE_SECONDS", str(RUN_TIMEOUT + 0.5)),
    )
    w = worker(script)
    w.start()
    part = tmp_path / "part.txt"
    started = time.monotonic()
    result = w.run(files_batch(tmp_path / "in", ["a.txt", "b.txt"]), str(part), "text", timeout=RUN_TIMEOUT)
    assert result.ok, result
    assert time.monotonic() - started > RUN_TIMEOUT  # the write did outlast the timeout
    assert result.run_seconds < RUN_TIMEOUT
    assert part.read_text().splitlines() == ["a.txt", "b.txt"]


def _gone(pid: int) -> bool:
    """Return whether ``pid`` has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to see whether a process exited")
def test_timeout_also_kills_the_processes_run_started(tmp_path, worker):
    pid_file = tmp_path / "child.pid"
    script = write_script(
        tmp_path,
        f"""
        import subprocess
        import time

        def run(mini_batch):
            child = subprocess.Popen(["sleep", "60"])
            with open({str(pid_file)!r}, "w") as f:
                f.write(str(child.pid))
            time.sleep(60)
    """,
    )
    w = worker(script)
    w.start()
    # The timeout leaves run() ample time to start its child even on a busy machine.
    result = w.run(files_batch(tmp_path / "in", ["a.txt"]), None, "text", timeout=5)
    assert result.category == "timeout"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 120  # only bounds a hang: a killed child is gone within moments
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), "a process started by run() outlived the killed worker"


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("dies", "how"),
    [("os._exit(3)", "exit code 3"), ("os.kill(os.getpid(), signal.SIGKILL)", "signal 9")],
    ids=["os-exit", "sigkill"],
)
def test_worker_that_dies_in_run_is_reported_as_died_without_waiting_for_the_timeout(
    tmp_path, worker, dies, how
):
    script = write_script(
        tmp_path,
        f"""
        import os
        import signal

        def run(mini_batch):
            {dies}
    """,
    )
    w = worker(script)
    w.start()
    started = time.monotonic()
    result = w.run(files_batch(tmp_path / "in", ["a.txt"]), None, "text", timeout=RUN_TIMEOUT_NEVER)
    # Not a timeout: the death was seen when it happened, not after run_invocation_timeout.
    assert time.monotonic() - started < RUN_TIMEOUT_NEVER
    assert not result.ok
    assert result.category == "worker_died"
    assert "mb-000000" in result.message
    assert how in result.message
    assert not w.alive()
    assert w.shutdown() is None


# --- the channel to the worker: JSON only, and the framework's errors told as such ------------------


class _Planted:
    """Unpickling this creates a file: what a pickle channel would run on receipt."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_worker_channel_never_unpickles_and_answers_garbage_as_a_framework_error(tmp_path):
    import pickle
    import socket
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    from airflow_parallelrun.core.execution.channel import Channel
    from airflow_parallelrun.core.execution.worker import FRAMEWORK_EXIT

    marker = tmp_path / "code-ran"
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_parallelrun.core.execution.worker", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stderr=subprocess.PIPE,
        text=True,
    )
    theirs.close()
    raw = Connection(os.dup(ours.fileno()))
    raw.send_bytes(pickle.dumps(_Planted(str(marker))))
    reply = Channel(ours.detach()).recv()
    _, stderr = process.communicate(timeout=30)
    assert not marker.exists(), "the worker ran code it received"
    assert reply["ok"] is False and reply["category"] == "framework"
    assert "not of the entry script" in reply["message"] and "Traceback" in reply["traceback"]
    assert process.returncode == FRAMEWORK_EXIT
    assert "framework error" in stderr and "Traceback" in stderr
    raw.close()


def test_a_worker_that_fails_before_the_script_loads_raises_a_framework_error(tmp_path, worker):
    from airflow_parallelrun.core.execution.runner import WorkerError

    script = write_script(tmp_path, "def run(mini_batch):\n    return mini_batch\n")
    # A value that is not a string cannot become an environment variable: the engine fails, not the script.
    w = worker(script, environment_variables={"N": 1})
    with pytest.raises(WorkerError) as err:
        w.start()
    assert not isinstance(err.value, EntryScriptLoadError)
    assert "not of the entry script" in str(err.value)
    assert "TypeError" in str(err.value) and ENGINE_FRAMES in str(err.value)


def test_a_reply_with_numpy_numbers_crosses_the_channel_as_plain_numbers():
    import socket

    import numpy as np

    from airflow_parallelrun.core.execution.channel import Channel

    a, b = socket.socketpair()
    left, right = Channel(a.detach()), Channel(b.detach())
    left.send({"rejected": np.int64(2), "rejected_lines": [np.int32(3)], "seconds": np.float32(0.5)})
    assert right.recv() == {"rejected": 2, "rejected_lines": [3], "seconds": 0.5}
    with pytest.raises(TypeError, match="cannot cross the worker channel, which carries JSON only"):
        left.send({"frame": pd.DataFrame({"a": [1]})})
    left.close()
    right.close()


@pytest.mark.parametrize("fmt", ["text", "csv"])
def test_a_full_disk_while_writing_the_part_is_a_storage_error_not_the_scripts(tmp_path, worker, fmt):
    # /dev/full answers every write with ENOSPC: a real full disk, not a mock.
    script = write_script(
        tmp_path,
        """
        def run(mini_batch):
            return [f"scored {p}" for p in mini_batch]
    """,
    )
    w = worker(script)
    w.start()
    result = w.run(files_batch(tmp_path / "in", ["a.png"]), "/dev/full", fmt, timeout=30)
    assert not result.ok
    assert result.category == "storage", result.message
    assert "local disk" in result.message and "No space left" in result.message
    assert "worker.py" in result.traceback  # the engine's own frames, not the script's
