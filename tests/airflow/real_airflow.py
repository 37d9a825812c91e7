"""A real Airflow for tests: scheduler, dag-processor, api-server and triggerer as subprocesses.

Unlike ``dag.test()``, which runs a whole DAG in the test process, ``RealAirflow`` starts the
components a deployment runs, with the LocalExecutor, on a temporary ``AIRFLOW_HOME`` and a
SQLite database, every server on 127.0.0.1 and a free port. Tests talk to it through the public
REST API v2 only, as a user would::

    from tests.airflow.real_airflow import real_airflow  # noqa: F401

    def test_something(real_airflow):
        real_airflow.add_dag("my_dag", SOURCE)
        real_airflow.wait_for_dag("my_dag")
        run_id = real_airflow.trigger("my_dag")
        assert real_airflow.wait_for_run("my_dag", run_id) == "success"

Each component runs in a session and process group of its own (``start_new_session=True``).
``stop()`` sends SIGTERM to each group and, after a grace period, SIGKILL to every process of
this Airflow: the components' sessions (LocalExecutor workers, task supervisors, and the task
processes, which Airflow puts in process groups of their own), their descendants (an
entry-script worker starts a session of its own) and anything else naming this home.
Component logs are in ``<home>/logs/<component>.log``; task logs in ``<home>/logs/dag_id=...``.

The fixture ``real_airflow`` is module scoped: a test module that imports it gets one Airflow for
all its tests (use distinct DAG ids). Where the machine cannot run one (no loopback socket, a
port already taken), it skips, unless ``CI=true``, where it fails.

The defaults are the embedded deployment (LocalExecutor, SQLite). ``executor="CeleryExecutor"``
with ``sql_alchemy_conn`` (PostgreSQL), ``celery_broker_url`` (Redis), ``celery_queue`` and
``celery_workers`` gives the scale-out one: each ``CeleryWorker`` is an ``airflow celery worker``
component of its own, with its own Celery hostname, concurrency and environment (e.g. its own
``PARALLELRUN_POOL_DIR``, so that two workers on this machine stand for two nodes).
Each worker leads a session of its own, so ``stop()`` finds its prefork children and the task
processes they run; the warm worker pools that tasks start (sessions of their own, reparented to
init once their task ends) are found by the ``AIRFLOW_HOME`` they inherit. ``postgres_database``
makes a fresh database for one test run and drops it afterwards, ``service_unavailable`` tells
whether PostgreSQL and Redis answer, and ``delete_redis_keys`` removes a run's queue from the broker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

#: What /api/v2/monitor/health must call healthy before tests start.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
TERMINAL_RUN_STATES = ("success", "failed")
#: Seconds a component gets to exit after SIGTERM, at most. Airflow 3.3.2's dag-processor logs
#: "Exiting gracefully upon receiving signal 15", stops its parsing processes and then, more often
#: than not, goes on parsing (DagFileProcessorManager._exit_gracefully never exits): waiting the
#: full grace for it would only add 15 s to every stop().
SIGTERM_GRACE_CAP = {"dag-processor": 3.0}
READY_DAG_ID = "_real_airflow_ready"
READY_DAG = f'''\
"""Parsed at start-up to show that the DAG processor reads this folder; never runs."""
from airflow.sdk import DAG

with DAG("{READY_DAG_ID}", schedule=None, tags=["real_airflow"]):
    pass
'''


#: The PostgreSQL server and Redis broker of this machine (and CI's): trust auth, user postgres.
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class CeleryWorker:
    """One ``airflow celery worker`` of a ``RealAirflow``: a node of a scale-out deployment.

    ``name`` names the component (``celery-worker-<name>``, its log ``<home>/logs/celery-worker-
    <name>.log``) and starts its Celery hostname (``<name>-<token>@<host>``, unique per
    ``RealAirflow`` so that workers of other runs on the same broker never clash). ``env`` is added
    to this worker's environment only, last.
    """

    name: str
    concurrency: int = 2
    env: Mapping[str, str] = field(default_factory=dict)


class AirflowUnavailable(RuntimeError):
    """This machine cannot run a real Airflow (no loopback socket, a port taken, no POSIX)."""


class AirflowError(RuntimeError):
    """A component died, an API call failed, or something did not happen in time."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise AirflowUnavailable(f"cannot bind a TCP socket on 127.0.0.1: {exc}") from exc


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())}"
    except psutil.Error:
        return f"{process.pid} (gone)"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class RealAirflow:
    """Airflow's scheduler, dag-processor, api-server and triggerer on a home of their own.

    ``home`` holds ``airflow.cfg``, the SQLite database and the logs; ``dags_folder`` is the only
    DAG bundle (``add_dag`` writes into it). ``extra_env`` is added to the components'
    environment last, so it can override any setting made here.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: dict[str, str] | None = None,
        *,
        parallelism: int = 8,
        executor: str = "LocalExecutor",
        sql_alchemy_conn: str | None = None,
        celery_broker_url: str | None = None,
        celery_result_backend: str | None = None,
        celery_queue: str | None = None,
        celery_workers: Sequence[CeleryWorker] = (),
    ) -> None:
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.logs = self.home / "logs"
        self.extra_env = dict(extra_env or {})
        self.parallelism = parallelism
        self.executor = executor
        self.sql_alchemy_conn = sql_alchemy_conn
        #: Unique to this RealAirflow: in the Celery queue's name and the workers' hostnames.
        self.token = uuid.uuid4().hex[:10]
        self.celery_broker_url = celery_broker_url
        self.celery_result_backend = celery_result_backend
        self.celery_queue = celery_queue or f"parallelrun_{self.token}"
        self.celery_workers = tuple(celery_workers)
        if len({w.name for w in self.celery_workers}) != len(self.celery_workers):
            raise ValueError(f"celery worker names must differ: {[w.name for w in self.celery_workers]}")
        if self.celery_workers and executor != "CeleryExecutor":
            raise ValueError(f"celery_workers need executor='CeleryExecutor', not {executor!r}")
        self.component_env: dict[str, dict[str, str]] = {}  # per component, over self.env
        self.port = 0
        self.base_url = ""
        self.env: dict[str, str] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.leftovers: list[str] = []  # processes the last stop() had to hunt down, for the record
        self.startup_seconds = 0.0
        self._log_files: list[IO[bytes]] = []
        self._client: httpx.Client | None = None
        self._added: set[str] = set()
        self._sessions: set[int] = set()  # each component leads a session of its own

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> RealAirflow:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def build_env(self) -> dict[str, str]:
        """Return the components' environment: this process's, minus every Airflow setting, plus ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "PYTEST_"))}
        api = f"http://127.0.0.1:{self.port}"
        python_path = [str(REPO / "dags"), str(REPO)]
        if env.get("PYTHONPATH"):
            python_path.append(env["PYTHONPATH"])
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PYTHONPATH": os.pathsep.join(python_path),
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                    self.sql_alchemy_conn or f"sqlite:///{self.home / 'airflow.db'}"
                ),
                # One bundle, our folder; the test session's two bundles would point elsewhere.
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                    [
                        {
                            "name": "dags-folder",
                            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                            "kwargs": {"path": str(self.dags_folder)},
                        }
                    ]
                ),
                # New DAG files are seen within about a second, changed ones re-parsed within 5 s.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
                "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
                "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                # A task's supervisor notices its task process has exited only when its select()
                # times out, every min_heartbeat_interval (5 s): each task would hold its
                # LocalExecutor slot, and stop(), 5 s after it finished.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                # A task whose worker cannot load its DAG file fails at once, with the import
                # error in its log, instead of being rescheduled 3 times, 60 s apart.
                "AIRFLOW__WORKERS__MISSING_DAG_RETRIES": "0",
                # A task's calls to the Execution API wait 5 s by default: on a busy machine the
                # api-server can take longer to answer, and the task would fail for it.
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
                # The api-server serves the UI, the public API and the Execution API the task
                # processes report to; its default base URL is localhost:8080.
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": api,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
                # Every request is an admin's: the public API needs no login.
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                # The scheduler signs the tasks' Execution API tokens and the api-server checks
                # them: one secret for all components, fixed here rather than left to airflow.cfg.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
                # Log servers are not started (--skip-serve-logs; they would bind 0.0.0.0); logs
                # are read from the local files. Free ports anyway, in case something starts one.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
                "PARALLELRUN_EXAMPLES_DIR": str(self.home / "examples"),
            }
        )
        if self.executor == "CeleryExecutor":
            env.update(self._celery_env())
        env.update(self.extra_env)
        return env

    def _celery_env(self) -> dict[str, str]:
        """Return the Celery settings every component shares (the scheduler sends, the workers take)."""
        env = {
            # Tasks go to, and the workers take from, a queue of this RealAirflow's own.
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.celery_queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(
                max((w.concurrency for w in self.celery_workers), default=2)
            ),
            # A task runs once: Celery must not hand it to a second worker while the first runs it.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        }
        if self.celery_broker_url:
            env["AIRFLOW__CELERY__BROKER_URL"] = self.celery_broker_url
        if self.celery_result_backend:
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = self.celery_result_backend
        return env

    def celery_hostname(self, worker: CeleryWorker) -> str:
        """Return the Celery hostname of ``worker`` (``%h`` is this machine's host name, as Celery says)."""
        return f"{worker.name}-{self.token}@%h"

    def _commands(self) -> dict[str, list[str]]:
        """Return the components' command lines, in start order (the api-server, which tasks call, first)."""
        airflow = [sys.executable, "-m", "airflow"]
        commands = {
            "api-server": [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            "scheduler": [*airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [*airflow, "dag-processor"],
            "triggerer": [*airflow, "triggerer", "--skip-serve-logs"],
        }
        for worker in self.celery_workers:
            # --skip-serve-logs: the worker's log server binds every interface ("" / "::"), which
            # no setting changes; the task logs are read from the local files instead. --pid: the
            # default, <home>/airflow-worker.pid, would be one file for all the workers of this home.
            # Mingle and gossip only slow the start-up, and would talk to other runs' workers.
            commands[f"celery-worker-{worker.name}"] = [
                *airflow,
                "celery",
                "worker",
                "--celery-hostname",
                self.celery_hostname(worker),
                "--concurrency",
                str(worker.concurrency),
                "--queues",
                self.celery_queue,
                "--pid",
                str(self.home / f"celery-worker-{worker.name}.pid"),
                "--skip-serve-logs",
                "--without-mingle",
                "--without-gossip",
            ]
        return commands

    def _component_env(self, worker: CeleryWorker) -> dict[str, str]:
        """Return a Celery worker's own settings: its log server port, then its ``env``."""
        return {
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            **worker.env,
        }

    def start(self, timeout: float = 300) -> None:
        """Migrate the database, start the components and wait until they are healthy and parsing.

        Raises ``AirflowUnavailable`` when the machine cannot run Airflow and ``AirflowError``
        when Airflow fails; stop() is then still needed (the fixture and ``with`` call it).
        """
        if self.processes:
            raise AirflowError("already started")
        if not hasattr(os, "killpg"):
            raise AirflowUnavailable("needs POSIX process groups (os.killpg)")
        if importlib.util.find_spec("airflow") is None:
            raise AirflowUnavailable(f"airflow is not installed for {sys.executable}")
        started = time.monotonic()
        deadline = started + timeout
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = self.build_env()
        self.component_env = {
            f"celery-worker-{worker.name}": self._component_env(worker) for worker in self.celery_workers
        }

        migrate_log = self.logs / "db-migrate.log"
        with migrate_log.open("wb") as out:
            try:
                result = subprocess.run(
                    [sys.executable, "-m", "airflow", "db", "migrate"],
                    env=self.env,
                    cwd=self.home,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=max(1.0, deadline - time.monotonic()),
                    start_new_session=True,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise AirflowError(
                    f"airflow db migrate took over {timeout:g}s\n{_tail(migrate_log)}"
                ) from exc
        if result.returncode != 0:
            raise AirflowError(f"airflow db migrate failed ({result.returncode}):\n{_tail(migrate_log)}")

        self.add_dag(READY_DAG_ID, READY_DAG)
        for name, command in self._commands().items():
            log = (self.logs / f"{name}.log").open("wb")
            self._log_files.append(log)
            self.processes[name] = subprocess.Popen(
                command,
                env={**self.env, **self.component_env.get(name, {})},
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._sessions.add(self.processes[name].pid)
        self._wait_healthy(deadline)
        self._wait_celery_workers_ready(deadline)
        self._warm_up_execution_api(deadline)
        self.wait_for_dag(READY_DAG_ID, timeout=max(1.0, deadline - time.monotonic()))
        self.startup_seconds = time.monotonic() - started

    def _wait_healthy(self, deadline: float) -> None:
        last: Any = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                if response.status_code == 200:
                    last = response.json()
                    if all(last.get(c, {}).get("status") == "healthy" for c in HEALTH_COMPONENTS):
                        return
                else:
                    last = f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise AirflowError(f"Airflow did not become healthy in time; last health: {last}\n{self.describe()}")

    def _wait_celery_workers_ready(self, deadline: float) -> None:
        """Wait until every Celery worker has logged "<hostname> ready.": it now takes tasks."""
        waiting = {
            worker.name: self.celery_hostname(worker).split("@")[0] + "@" for worker in self.celery_workers
        }
        while waiting and time.monotonic() < deadline:
            self.check_alive()
            for name, prefix in list(waiting.items()):
                text = (self.logs / f"celery-worker-{name}.log").read_text(errors="replace")
                if any(prefix in line and "ready." in line for line in text.splitlines()):
                    del waiting[name]
            if waiting:
                time.sleep(0.5)
        if waiting:
            raise AirflowError(f"Celery workers {sorted(waiting)} not ready in time\n{self.describe()}")

    def _warm_up_execution_api(self, deadline: float) -> None:
        """Make the first Execution API request ourselves, with time to spare.

        The Execution API (cadwyn) builds its versioned routes on its first request, which takes
        5 to 10 s and blocks the api-server's event loop meanwhile. Left to the first task, that
        request outlasts the task SDK's 5 s ``[workers] execution_api_timeout``, fails, and is
        retried: the first task of the first test starts 5 s late, after a 400 in the log.
        The api-server logs a harmless "JWT reissue middleware failed to refresh token" warning
        for this request: the all-admins middleware gives it a UI token, not a task's.
        """
        url = f"{self.base_url}/execution/health"
        try:
            response = httpx.get(url, timeout=max(1.0, deadline - time.monotonic()))
        except httpx.TransportError as exc:
            raise AirflowError(f"GET {url} failed: {exc!r}\n{self.describe()}") from exc
        if response.status_code != 200:
            raise AirflowError(f"GET {url}: HTTP {response.status_code}: {response.text[:500]}")

    def check_alive(self) -> None:
        """Raise if a component has exited; a port already taken raises ``AirflowUnavailable``."""
        for name, proc in self.processes.items():
            code = proc.poll()
            if code is None:
                continue
            tail = _tail(self.logs / f"{name}.log")
            if "address already in use" in tail.lower():
                raise AirflowUnavailable(f"the {name} could not bind its port {self.port}:\n{tail}")
            raise AirflowError(f"the {name} exited with code {code}; its log ends with:\n{tail}")

    def describe(self, lines: int = 25) -> str:
        """Return the last lines of every component's log, for failure messages."""
        return "\n".join(
            f"--- {self.logs / (name + '.log')} ---\n{_tail(self.logs / f'{name}.log', lines)}"
            for name in self.processes
        )

    def stop(self, grace: float = 15) -> None:
        """Stop every component and everything it started; safe to call twice, and after a failed start.

        SIGTERM to each component's process group, up to ``grace`` seconds for the components
        to exit (the scheduler waits for running tasks; ``SIGTERM_GRACE_CAP`` says why the
        dag-processor gets less), then SIGKILL to every process of this Airflow
        (``airflow_processes``) until none is left. Killing the process groups is not enough:
        Airflow's supervisor puts each task process in a group of its own, and an entry-script
        worker starts a session of its own. ``leftovers`` names what was still alive once the
        component groups had been killed. Raises ``AirflowError`` if a process survives all that.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        for name, proc in self.processes.items():
            deadline = signalled + min(grace, SIGTERM_GRACE_CAP.get(name, grace))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Listed before the SIGKILL: once a task process dies, its entry-script worker (a session
        # of its own) is nobody's descendant any more.
        remaining = self.airflow_processes()
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.leftovers = []
        for _ in range(5):
            remaining = [p for p in {*remaining, *self.airflow_processes()} if _alive(p)]
            if not remaining:
                break
            self.leftovers.extend(_describe(p) for p in remaining if _describe(p) not in self.leftovers)
            for process in remaining:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            psutil.wait_procs(remaining, timeout=5)
            remaining = []
        survivors = [p for p in self.airflow_processes() if _alive(p)]
        self.processes.clear()
        self._sessions.clear()
        for log in self._log_files:
            log.close()
        self._log_files.clear()
        if survivors:
            raise AirflowError(
                "processes of this Airflow survived stop(): " + "; ".join(_describe(p) for p in survivors)
            )

    def airflow_processes(self) -> list[psutil.Process]:
        """Return the live processes of this Airflow, the components included.

        That is every process in a component's session (LocalExecutor workers, task supervisors
        and task processes, parsing processes), their descendants (an entry-script worker starts
        a session of its own), and any other process whose environment, working folder or
        command line names this home. The session is what finds the processes that rename
        themselves with setproctitle, which clobbers what /proc shows of their environment.
        """
        home = str(self.home)
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["pid", "cmdline", "environ", "cwd", "status"]):
            info = process.info
            if info["pid"] == os.getpid() or info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            try:
                in_session = os.getsid(info["pid"]) in self._sessions
            except OSError:
                continue
            environ = info.get("environ") or {}
            cwd = info.get("cwd") or ""
            if (
                in_session
                or environ.get("AIRFLOW_HOME") == home
                or cwd == home
                or cwd.startswith(home + os.sep)
                or any(home in arg for arg in info.get("cmdline") or [])
            ):
                found[info["pid"]] = process
        for process in list(found.values()):
            with contextlib.suppress(psutil.Error):
                for child in process.children(recursive=True):
                    found.setdefault(child.pid, child)
        return list(found.values())

    def owns(self, process: psutil.Process) -> bool:
        """Tell whether ``process`` belongs to this Airflow, as ``airflow_processes`` tells, cheaply.

        A process in a component's session, or one that inherited this ``AIRFLOW_HOME`` (an
        entry-script worker or warm pool, which start sessions of their own). For a sampler that
        asks once per new process; the rarer finds of ``airflow_processes`` (by working folder or
        command line) are left out.
        """
        try:
            if os.getsid(process.pid) in self._sessions:
                return True
            return bool(process.environ().get("AIRFLOW_HOME") == str(self.home))
        except (OSError, psutil.Error):
            return False

    # -- DAG files ----------------------------------------------------------------------------

    def add_dag(self, name: str, source: str) -> Path:
        """Write ``source`` (dedented) to ``<dags_folder>/<name>.py`` atomically and return the path.

        As always, the DAG processor reads only files that contain both "airflow" and "dag".
        """
        filename = name if name.endswith(".py") else f"{name}.py"
        path = self.dags_folder / filename
        partial = self.dags_folder / f".{filename}.partial"
        partial.write_text(textwrap.dedent(source))
        os.replace(partial, path)
        self._added.add(filename)
        return path

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        """Wait until the api-server knows ``dag_id`` (parsed and serialized); return GET /dags/{id}.

        An import error in ``<dag_id>.py`` (or, if no file has that name, in any file written
        with ``add_dag``) fails at once, with its traceback. A file rewritten under the same DAG
        id is re-parsed within seconds, but this returns at once: give each variant its own id.
        """
        deadline = time.monotonic() + timeout
        own_file = f"{dag_id}.py"
        while True:
            self.check_alive()
            response = self.api("GET", f"/api/v2/dags/{dag_id}", expect=(200, 404))
            if response.status_code == 200:
                return dict(response.json())
            errors = self.import_errors()
            if own_file in self._added:
                errors = [e for e in errors if Path(e["filename"]).name == own_file]
            if errors:
                shown = "\n\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise AirflowError(f"DAG {dag_id!r} not parsed; import errors:\n{shown}")
            if time.monotonic() > deadline:
                raise AirflowError(
                    f"DAG {dag_id!r} was not parsed within {timeout:g}s\n"
                    f"--- dag processor logs ---\n{self._dag_processor_logs()}\n{self.describe()}"
                )
            time.sleep(0.5)

    def import_errors(self) -> list[dict[str, Any]]:
        """Return the import errors of the files written with ``add_dag``."""
        body = self.api("GET", "/api/v2/importErrors", params={"limit": 100}).json()
        return [e for e in body["import_errors"] if Path(e["filename"]).name in self._added]

    def _dag_processor_logs(self) -> str:
        folder = self.logs / "dag_processor"
        files = sorted(folder.rglob("*.log"), key=lambda p: p.stat().st_mtime) if folder.exists() else []
        return "\n".join(f"{p}:\n{_tail(p, 15)}" for p in files[-3:])

    # -- REST API -----------------------------------------------------------------------------

    def get_token(self) -> str:
        """Return a JWT for the public API. With all-admins, GET /auth/token hands one out for free."""
        response = httpx.get(f"{self.base_url}/auth/token", timeout=30)
        if response.status_code not in (200, 201):
            raise AirflowError(f"GET /auth/token: HTTP {response.status_code}: {response.text[:500]}")
        return str(response.json()["access_token"])

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            if not self.base_url:
                raise AirflowError("not started")
            self._client = httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self.get_token()}"},
                timeout=30,
            )
        return self._client

    def api(self, method: str, path: str, *, expect: Sequence[int] = (200,), **kwargs: Any) -> httpx.Response:
        """Call the REST API; a status not in ``expect`` raises with the response body."""
        response = self.client.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise AirflowError(f"{method} {path}: HTTP {response.status_code}: {response.text[:2000]}")
        return response

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Unpause ``dag_id``, start a manual run (no logical date) and return its run id."""
        self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id is not None:
            body["dag_run_id"] = run_id
        response = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        return str(response.json()["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json())

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Poll until the run is ``success`` or ``failed`` and return that state."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            state = str(self.dag_run(dag_id, run_id)["state"])
            if state in TERMINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                states = [
                    (t["task_id"], t["map_index"], t["state"]) for t in self.task_instances(dag_id, run_id)
                ]
                raise AirflowError(
                    f"run {run_id} of {dag_id} still {state!r} after {timeout:g}s; "
                    f"task instances: {states}\n{self.describe()}"
                )
            time.sleep(0.5)

    def task_instances(self, dag_id: str, run_id: str, **params: Any) -> list[dict[str, Any]]:
        """Return every task instance of a run, one per map index for mapped tasks.

        Each is the API's TaskInstanceResponse: ``task_id``, ``map_index`` (-1 when not mapped),
        ``rendered_map_index``, ``state``, ``try_number``, ``start_date``, ``end_date``, ...
        """
        found: list[dict[str, Any]] = []
        while True:
            page = self.api(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found), "order_by": "map_index", **params},
            ).json()
            found.extend(page["task_instances"])
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def clear_task_instances(
        self,
        dag_id: str,
        run_id: str,
        task_ids: Sequence[str | tuple[str, int]] | None = None,
        *,
        only_failed: bool = True,
        include_downstream: bool = False,
        include_upstream: bool = False,
        reset_dag_runs: bool = True,
        dry_run: bool = False,
        **extra: Any,
    ) -> list[dict[str, Any]]:
        """Clear task instances of one run so the scheduler runs them again; return those cleared.

        ``task_ids`` takes task ids (all map indexes of a mapped task) or ``(task_id, map_index)``
        pairs. Unlike the API, ``dry_run`` defaults to False here.
        """
        body: dict[str, Any] = {
            "dag_run_id": run_id,
            "only_failed": only_failed,
            "include_downstream": include_downstream,
            "include_upstream": include_upstream,
            "reset_dag_runs": reset_dag_runs,
            "dry_run": dry_run,
            **extra,
        }
        if task_ids is not None:
            body["task_ids"] = [list(t) if isinstance(t, tuple) else t for t in task_ids]
        response = self.api("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)
        return list(response.json()["task_instances"])


def running_airflow(
    home: Path,
    extra_env: dict[str, str] | None = None,
    *,
    kind: type[RealAirflow] | None = None,
    **options: Any,
) -> Iterator[RealAirflow]:
    """Yield a started ``RealAirflow`` on ``home``; stop it, with everything it started, afterwards.

    ``options`` go to ``RealAirflow`` (``executor``, ``celery_workers`` ...); ``kind`` is a
    subclass to start instead. Skips when this machine cannot run one, except under ``CI=true``,
    where that fails.
    """
    airflow = (kind or RealAirflow)(home, home / "dags", extra_env, **options)
    try:
        airflow.start()
    except AirflowUnavailable as exc:
        airflow.stop()
        message = f"cannot run a real Airflow on this machine: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    except BaseException:
        airflow.stop()
        raise
    try:
        yield airflow
    finally:
        airflow.stop()


def kill_at_failpoints(
    airflow: RealAirflow, dag_id: str, run_id: str, markers: Mapping[str, Path], timeout: float = 600
) -> dict[str, int]:
    """SIGKILL each process that stops at an armed failpoint until the run ends; return ``{point: pid}``.

    ``markers`` maps each armed point (see ``core/failpoints.py``) to its marker file, where the
    process that stopped there wrote its process id.
    """
    killed: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while airflow.dag_run(dag_id, run_id)["state"] not in TERMINAL_RUN_STATES:
        if time.monotonic() > deadline:
            raise AirflowError(f"run {run_id} did not finish in {timeout}s; killed so far: {killed}")
        for name, marker in markers.items():
            if name not in killed and marker.exists() and marker.read_text():
                killed[name] = int(marker.read_text())
                os.kill(killed[name], signal.SIGKILL)
        time.sleep(0.2)
    return killed


def trigger_and_kill(
    airflow: RealAirflow, dag_id: str, points: Sequence[str], folder: Path, failpoints: Path
) -> tuple[str, dict[str, int]]:
    """Arm ``points`` in the ``failpoints`` file, start a run and SIGKILL whatever stops at them.

    Returns the run id and ``{point: pid}`` of the processes killed; the points are disarmed
    when the run ends. Markers are written into ``folder``.
    """
    markers = {name: folder / f"marker-{i}" for i, name in enumerate(points)}
    failpoints.write_text(json.dumps({k: str(v) for k, v in markers.items()}))
    try:
        run_id = airflow.trigger(dag_id)
        return run_id, kill_at_failpoints(airflow, dag_id, run_id, markers)
    finally:
        failpoints.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def real_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAirflow]:
    """A started ``RealAirflow`` for the test module, stopped (with everything it started) at its end."""
    yield from running_airflow(tmp_path_factory.mktemp("real-airflow"))


def service_unavailable(postgres: str = POSTGRES_SERVER, redis_url: str = REDIS_URL) -> str | None:
    """Return why a CeleryExecutor deployment cannot run here (a module or a service missing), or None."""
    for module, package in (
        ("psycopg", "psycopg[binary]"),
        ("asyncpg", "asyncpg"),
        ("redis", "redis"),
        ("airflow.providers.celery", "apache-airflow-providers-celery"),
    ):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{package} is not installed (pip install -e '.[dev]')"
    import psycopg
    import redis

    try:
        with psycopg.connect(_libpq_url(postgres), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {postgres}: {exc}"
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        return f"no Redis at {redis_url}: {exc}"
    return None


def _libpq_url(url: str) -> str:
    """Return a SQLAlchemy PostgreSQL URL as libpq spells it (no ``+driver``)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


@contextlib.contextmanager
def postgres_database(server: str = POSTGRES_SERVER, prefix: str = "parallelrun_celery_") -> Iterator[str]:
    """Create a fresh database ``<prefix><random>`` on ``server``; yield its SQLAlchemy URL; drop it after.

    The drop uses ``WITH (FORCE)``, which ends the connections still open to it.
    """
    import psycopg
    from psycopg import sql

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(server), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(_libpq_url(server), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def delete_redis_keys(redis_url: str, token: str) -> int:
    """Delete the broker's keys that name ``token`` (a RealAirflow's queue and bindings); return how many."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"*{token}*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()
