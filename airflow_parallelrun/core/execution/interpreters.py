"""Another Python interpreter for the entry-script workers: check it, and let it import this package.

With ``python=`` or ``requirements=`` a run's workers run in an interpreter other than Airflow's,
so an entry script gets the libraries it was written for (pandas 2 where Airflow has pandas 3).
The worker side imports no Airflow: it needs this package's ``core`` and, for some runs, a few
libraries (:func:`worker_needs`). The other interpreter finds this package through
``PYTHONPATH`` set to a folder holding only links to this package's top-level folders
(:func:`worker_path_env`), never to the folder they sit in: that is a ``site-packages`` whose
libraries would shadow the interpreter's own. The workers therefore run the very code the task
runs, whatever copy of this package (if any) the other interpreter has.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from airflow_parallelrun.core.errors import WorkerEnvironmentError
from airflow_parallelrun.core.storage.atomic import link_in_place

#: The oldest Python the worker side runs on (the package's ``requires-python``).
MIN_PYTHON = (3, 11)

#: What the worker side imports besides the standard library, each with the oldest version the
#: package is tested with (its floors in pyproject.toml). Which of them a run needs: see
#: :func:`worker_needs`; a built environment gets them all.
WORKER_LIBRARIES = {"pandas": "2.0", "pyarrow": "14", "fsspec": "2023.10", "tenacity": "8.3"}

#: This distribution's top-level packages a worker may import (``azureml_user``, where it is
#: installed, lets an Azure entry script's import line run unchanged).
SHARED_PACKAGES = ("airflow_parallelrun", "azureml_user")

CACHE_DIR_ENV = "PARALLELRUN_CACHE_DIR"

# Runs in the other interpreter, whatever its version, so that even a too old one says which it is.
_PROBE = """
import importlib.util, json, sys
out = {"version": list(sys.version_info[:3]), "full_version": sys.version, "libraries": {}, "worker": ""}
if tuple(sys.version_info[:2]) >= tuple(json.loads(sys.argv[2])):
    from importlib import metadata
    for name in json.loads(sys.argv[1]):
        found = importlib.util.find_spec(name) is not None
        try:
            out["libraries"][name] = metadata.version(name) if found else None
        except Exception:
            out["libraries"][name] = "0"
    try:
        import airflow_parallelrun.core.execution.worker
    except Exception as exc:
        out["worker"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Interpreter:
    """A Python interpreter the workers can run in: its path (as given) and its version."""

    path: str
    version: tuple[int, ...]
    full_version: str


def worker_needs(*, table_format: str | None, part_format: str) -> tuple[str, ...]:
    """Return the libraries a worker needs beyond the standard library, for one kind of mini-batch.

    ``table_format`` is the input table's format (None for files); ``part_format`` the part's.

    >>> worker_needs(table_format=None, part_format="text")
    ()
    >>> worker_needs(table_format="csv", part_format="text")
    ('fsspec', 'pandas', 'tenacity')
    >>> worker_needs(table_format=None, part_format="parquet")
    ('pandas', 'pyarrow')
    """
    needs: set[str] = set()
    if table_format is not None:
        needs |= {"pandas", "fsspec", "tenacity"}  # core.inputs.reading and the storage it reads through
        if table_format == "parquet":
            needs.add("pyarrow")
    if part_format != "text":
        needs.add("pandas")
        if part_format in ("parquet", "rows"):
            needs.add("pyarrow")
    return tuple(sorted(needs))


def cache_root() -> str:
    """Return this user's cache folder of the package: ``$PARALLELRUN_CACHE_DIR`` or ``~/.cache/...``."""
    root = os.environ.get(CACHE_DIR_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "airflow-parallelrun")
    return os.path.abspath(root)


def shared_packages_folder() -> str:
    """Return a folder holding links to this package's top-level folders, made if missing."""
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = os.path.dirname(package)
    folder = os.path.join(cache_root(), "python-path", hashlib.sha256(parent.encode()).hexdigest()[:12])
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for name in SHARED_PACKAGES:
        target = os.path.join(parent, name)
        link = os.path.join(folder, name)
        if not os.path.isdir(target) or (os.path.islink(link) and os.readlink(link) == target):
            continue
        link_in_place(target, link)  # two tasks may link at once
    return folder


def worker_path_env(python: str) -> dict[str, str]:
    """Return the variables a worker in ``python`` starts with ("": Airflow's own, none needed).

    ``PYTHONPATH`` starts with :func:`shared_packages_folder`; what it held here follows, as
    Airflow's ExternalPythonOperator passes it on.
    """
    if not python:
        return {}
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": shared_packages_folder() + (os.pathsep + rest if rest else "")}


def _version(text: str) -> tuple[int, ...]:
    """Return the leading numbers of a version: ``"2.2.3"`` -> (2, 2, 3), ``"2026.9.0"``, ``"14"``."""
    numbers = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def _fix(python: str) -> str:
    return (
        f"Give python= the path of a Python {'.'.join(map(str, MIN_PYTHON))} or later interpreter that "
        "exists on every worker node (e.g. '/opt/envs/scoring/bin/python'), or requirements=[...] to "
        "have an environment built for the workers"
    )


def probe(python: str, needs: Iterable[str] = ()) -> dict[str, object]:
    """Run ``python`` once; return its version and which of ``needs`` it has, in which versions."""
    where = socket.gethostname()
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        state = "is not executable" if os.path.exists(python) else "does not exist"
        raise WorkerEnvironmentError(f"python={python!r} {state} on this worker ({where}). {_fix(python)}")
    command = [python, "-c", _PROBE, json.dumps(sorted(needs)), json.dumps(MIN_PYTHON)]
    env = {**os.environ, **worker_path_env(python)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkerEnvironmentError(
            f"python={python!r} could not be run on {where}: {exc}. {_fix(python)}"
        ) from exc
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        raise WorkerEnvironmentError(
            f"python={python!r} did not run as a Python interpreter on {where} "
            f"(exit code {done.returncode}). {_fix(python)}",
            (done.stderr or done.stdout)[-4000:],
        ) from None


def check_interpreter(python: str, needs: Iterable[str] = ()) -> Interpreter:
    """Check that the workers can run in ``python`` with the libraries ``needs``; return it.

    Raise ``WorkerEnvironmentError`` naming the path and what to do when it does not exist, does
    not run, is older than ``MIN_PYTHON``, lacks a library or has one older than its floor, or
    cannot import this package's worker.
    """
    python = os.path.abspath(os.path.expanduser(python))
    found = probe(python, needs)
    version: tuple[int, ...] = tuple(found["version"])  # type: ignore[arg-type]
    shown = ".".join(map(str, version))
    if version < MIN_PYTHON:
        raise WorkerEnvironmentError(
            f"python={python!r} is Python {shown}; the workers need Python "
            f"{'.'.join(map(str, MIN_PYTHON))} or later. {_fix(python)}"
        )
    libraries: dict[str, str | None] = found["libraries"]  # type: ignore[assignment]
    wrong = [
        f"{name} {have}" if have else f"no {name}"
        for name, have in sorted(libraries.items())
        if have is None or _version(have) < _version(WORKER_LIBRARIES[name])
    ]
    if wrong:
        wanted = " ".join(f"'{name}>={WORKER_LIBRARIES[name]}'" for name in sorted(libraries))
        raise WorkerEnvironmentError(
            f"python={python!r} (Python {shown}) has {', '.join(wrong)}; the workers of this run need "
            f"{wanted}. Install them into it (`{python} -m pip install {wanted}`), or give "
            "requirements=[...] instead, which builds an environment that has them"
        )
    if found["worker"]:
        raise WorkerEnvironmentError(
            f"python={python!r} (Python {shown}) cannot import this package's worker: {found['worker']}. "
            f"This is an error of airflow-parallelrun under that interpreter, not of the entry script. "
            f"{_fix(python)}"
        )
    return Interpreter(python, version, str(found["full_version"]))
