"""The workers' virtual environment for ``requirements=``: built once per node, cached, reused.

As with PythonVirtualenvOperator's ``venv_cache_path``, an environment is a folder
``venv-<key>`` in the cache folder (``venv_cache_path``, default ``<cache root>/venvs``, see
:func:`~.interpreters.cache_root`). The key hashes the requirements, the base interpreter (its
path and full version) and what the worker side needs (``WORKER_LIBRARIES``, installed beside the
requirements, so one environment serves any run of those requirements).

- **Built once**: under the lock file ``venv-<key>.lock``, so two task instances on a node never
  build it twice: the second waits and finds it built. pip inherits the lock, so a build whose
  task was killed keeps others out until its pip has exited. A folder counts as built once its
  marker ``.parallelrun-ready.json`` exists, written last, after the new interpreter passed the
  workers' check; a folder without it (a killed build) is removed and built again. A virtual
  environment cannot be moved once built (its scripts hold its path), so it is built in place,
  not in a temporary folder renamed after.
- **Failing once**: when pip fails, the folder is removed and ``venv-<key>.failed.json`` keeps
  pip's message with the run's key. The other task instances of that run on this node fail at
  once with the same message instead of running pip again; the next run tries again (a network
  outage heals, a typo fails again, once). Changing the requirements (a new key), or removing
  that file, tries again at once.
- pip is the new environment's own, under the user's pip configuration (``pip.conf``, ``PIP_*``
  variables: a private index works); its whole output is in ``venv-<key>.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from airflow_parallelrun.core.errors import WorkerEnvironmentError
from airflow_parallelrun.core.execution.interpreters import (
    WORKER_LIBRARIES,
    Interpreter,
    cache_root,
    check_interpreter,
    worker_needs,
)
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.storage.atomic import write_local_file

if TYPE_CHECKING:
    from airflow_parallelrun.core.config import ParallelRunConfig

log = logging.getLogger(__name__)

READY = ".parallelrun-ready.json"

#: Bumped when what a built environment holds changes in a way its key does not show.
_LAYOUT = 1

# Interpreters this process checked, by (path, needs): a task that replaces a worker (after a
# timeout) does not run the check again.
_checked: dict[tuple[str, tuple[str, ...]], Interpreter] = {}


def worker_python(
    config: ParallelRunConfig,
    *,
    run_key: str | None = None,
    mini_batch: MiniBatch | None = None,
    part_format: str = "text",
) -> str:
    """Return the interpreter the workers of ``config`` run in ("" for Airflow's own).

    ``requirements`` builds (or finds) the environment from ``python`` (default: this
    interpreter); ``python`` alone is checked for what a worker needs to read ``mini_batch`` and
    write a part in ``part_format`` (:func:`~.interpreters.worker_needs`). Raise
    ``WorkerEnvironmentError`` with what to do when neither can serve.
    """
    if config.requirements:
        base = _checked_interpreter(config.python or sys.executable, ())
        return venv_python(config.requirements, base, config.venv_cache_path, run_key=run_key)
    if not config.python:
        return ""
    piece = mini_batch.piece if mini_batch is not None else None
    needs = worker_needs(table_format=piece.format if piece is not None else None, part_format=part_format)
    return _checked_interpreter(config.python, needs).path


def _checked_interpreter(python: str, needs: tuple[str, ...]) -> Interpreter:
    known = _checked.get((python, needs))
    if known is None or not os.path.exists(known.path):
        known = _checked[(python, needs)] = check_interpreter(python, needs)
    return known


def venv_key(requirements: Sequence[str], base: Interpreter) -> str:
    """Return the name of the environment of ``requirements`` built from ``base``."""
    identity = [list(requirements), os.path.realpath(base.path), base.full_version, WORKER_LIBRARIES, _LAYOUT]
    return "venv-" + hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def cache_folder(path: str | None) -> str:
    """Return the folder environments are cached in, made (for this user only) if missing."""
    folder = os.path.abspath(os.path.expanduser(path)) if path else os.path.join(cache_root(), "venvs")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


def venv_python(
    requirements: Sequence[str], base: Interpreter, cache: str | None = None, *, run_key: str | None = None
) -> str:
    """Return the interpreter of the environment of ``requirements``, building it if needed."""
    folder = os.path.join(cache_folder(cache), venv_key(requirements, base))
    python = os.path.join(folder, "bin", "python")
    if os.path.exists(os.path.join(folder, READY)):
        return python
    with _build_lock(folder) as lock:
        if os.path.exists(os.path.join(folder, READY)):
            return python
        _raise_if_failed(folder, run_key)
        _build(folder, requirements, base, run_key, lock)
    return python


@contextlib.contextmanager
def _build_lock(folder: str) -> Iterator[int]:
    """Hold ``<folder>.lock``; the file stays (removing a lock file others may hold is a race)."""
    fd = os.open(folder + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another task is building the workers' environment %s; waiting for it", folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _raise_if_failed(folder: str, run_key: str | None) -> None:
    """Fail at once with pip's message if an earlier task instance of this run failed to build here."""
    try:
        with open(folder + ".failed.json") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return
    if run_key is None or record.get("run_key") != run_key:
        return
    raise WorkerEnvironmentError(
        f"{record['message']} (pip ran once, at {record.get('at')}, in an earlier task instance of this "
        "run on this node; it is not run again in this run)",
        record.get("output", ""),
    )


def _build(
    folder: str, requirements: Sequence[str], base: Interpreter, run_key: str | None, lock: int
) -> None:
    """Build the environment in ``folder``: a venv, then pip; write the ready marker last."""
    shutil.rmtree(folder, ignore_errors=True)  # what a killed build left
    python = os.path.join(folder, "bin", "python")
    libraries = [f"{name}>={floor}" for name, floor in WORKER_LIBRARIES.items()]
    pip = [python, "-m", "pip", "install", "--no-input", "--progress-bar", "off"]
    steps = (
        ("create a virtual environment", [base.path, "-m", "venv", folder]),
        ("install", [*pip, *requirements, *libraries]),
    )
    started = time.monotonic()
    log.info("building the workers' environment %s for requirements=%r", folder, list(requirements))
    with open(folder + ".log", "a") as out:
        out.write(f"=== build for run {run_key} at {_now()} (pid {os.getpid()})\n")
        for what, command in steps:
            code, output = _run_logged(command, out, lock)
            if code:
                _fail(folder, requirements, run_key, what, code, output)
    check_interpreter(python, WORKER_LIBRARIES)
    record = {"requirements": list(requirements), "base": base.path, "seconds": time.monotonic() - started}
    write_local_file(os.path.join(folder, READY), json.dumps({**record, "built": _now()}).encode())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder + ".failed.json")
    log.info("built the workers' environment %s in %.1fs", folder, record["seconds"])


def _run_logged(command: list[str], out: TextIO, lock: int) -> tuple[int, str]:
    """Run ``command`` into the build's log ``out``, holding ``lock``; return its exit code and output."""
    out.write(f"$ {shlex.join(command)}\n")
    out.flush()
    offset = out.tell()
    # pip must see the new environment only: not what PYTHONPATH adds here (maybe Airflow's libraries).
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}
    code = subprocess.run(
        command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, pass_fds=(lock,), env=env
    ).returncode
    with open(out.name, errors="replace") as f:
        f.seek(offset)
        return code, f.read()


def _fail(
    folder: str, requirements: Sequence[str], run_key: str | None, what: str, code: int, output: str
) -> None:
    """Remove the half-built ``folder``, record why for this run's other task instances, and raise."""
    shutil.rmtree(folder, ignore_errors=True)
    lines = output.splitlines()
    errors = [line[:1000] for line in lines if line.startswith("ERROR:")] or [
        line[:1000] for line in lines[-15:]
    ]
    message = (
        f"requirements={list(requirements)!r}: could not {what} for the workers (exit code {code}):\n"
        + "\n".join(errors)
        + f"\nFix requirements= (a changed list builds a new environment). The whole output is in "
        f"{folder}.log; remove {folder}.failed.json to try again in this run"
    )
    record = {"run_key": run_key, "at": _now(), "message": message, "output": output[-8000:]}
    write_local_file(folder + ".failed.json", json.dumps(record).encode())
    raise WorkerEnvironmentError(message, output[-8000:])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
