"""Run mini-batches in a worker process, with a timeout per ``run()`` call and tries per mini-batch."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from airflow_parallelrun.core.errors import EntryScriptLoadError, ParallelRunError
from airflow_parallelrun.core.execution import entry_script as es
from airflow_parallelrun.core.execution.channel import Channel
from airflow_parallelrun.core.execution.interpreters import worker_path_env
from airflow_parallelrun.core.inputs.minibatch import MiniBatch

log = logging.getLogger(__name__)


class WorkerError(ParallelRunError):
    """A worker process failed for a reason of airflow-parallelrun's, not of the entry script's."""


# Workers of this process, so that a task being killed can take them down with it.
_LIVE: weakref.WeakSet[WorkerProcess] = weakref.WeakSet()


def track_worker(worker: WorkerProcess) -> None:
    """Count ``worker`` among this process's live workers, which ``kill_live_workers`` kills."""
    _LIVE.add(worker)


def kill_live_workers() -> int:
    """Kill every worker this process started that is still running; return how many."""
    workers = [w for w in list(_LIVE) if w.alive()]
    for worker in workers:
        worker.kill()
    return len(workers)


# Reading a staged mini-batch is local work; this bounds a worker that stopped answering.
READ_TIMEOUT = 3600.0


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to host an entry script; ``python`` "" is this interpreter."""

    entry_script: str
    arguments: tuple[str, ...] = ()
    environment_variables: dict[str, str] = field(default_factory=dict)
    logging_level: str = "INFO"
    output_dir: str = ""
    log_dir: str = ""
    working_dir: str = ""
    python: str = ""


@dataclass
class TryResult:
    """The outcome of one try of one mini-batch."""

    ok: bool
    items: int | None = None
    returned: int = 0
    rejected: int = 0
    run_seconds: float = 0.0
    category: str = ""
    message: str = ""
    traceback: str = ""

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> TryResult:
        return cls(
            ok=bool(reply.get("ok")),
            items=reply.get("items"),
            returned=int(reply.get("returned") or 0),
            rejected=int(reply.get("rejected") or 0),
            run_seconds=float(reply.get("run_seconds") or 0.0),
            category=reply.get("category", ""),
            message=reply.get("message", ""),
            traceback=reply.get("traceback", ""),
        )


def send_fds(conn: Connection, fds: tuple[int, ...]) -> None:
    """Send file descriptors over ``conn``'s Unix socket, right after a message that announces them."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        socket.send_fds(sock, [b"F"], list(fds))


class WorkerProcess:
    """One Python process hosting the entry script; ``init()`` has run once it is started."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.init_seconds = 0.0
        self.timed_out = False
        # A worker this process started shares its stdout and stderr; a leased one is sent them.
        self.attach_output = False

    def start(self) -> None:
        """Start the process and wait for ``init()``; raise ``EntryScriptLoadError`` if it fails."""
        self.launch()
        self.await_ready()

    def launch(
        self, *, extra_env: dict[str, str] | None = None, output_fds: tuple[int, int] | None = None
    ) -> None:
        """Start the process and send it the entry script; ``await_ready`` waits for ``init()``.

        ``output_fds`` (stdout, stderr) are where the script's prints go during import and
        ``init()``: a pool passes the requesting task's own, since the worker outlives it.
        """
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env.update(
            {
                es.OUTPUT_DIR_ENV: self.settings.output_dir,
                es.LOG_DIR_ENV: self.settings.log_dir,
                es.WORKING_DIR_ENV: self.settings.working_dir,
                es.LOGGING_LEVEL_ENV: self.settings.logging_level,
                "PYTHONUNBUFFERED": "1",
                **worker_path_env(self.settings.python),
                **(extra_env or {}),
            }
        )
        self.process = subprocess.Popen(
            [
                self.settings.python or sys.executable,
                "-m",
                "airflow_parallelrun.core.execution.worker",
                str(theirs.fileno()),
            ],
            pass_fds=[theirs.fileno()],
            env=env,
            cwd=self.settings.working_dir or None,
            start_new_session=True,
        )
        track_worker(self)
        theirs.close()
        self.conn = Channel(ours.detach())
        self.conn.send(
            {
                "entry_script": self.settings.entry_script,
                "arguments": list(self.settings.arguments),
                "env": dict(self.settings.environment_variables),
                "attach_output": output_fds is not None,
            }
        )
        if output_fds is not None:
            send_fds(self.conn, output_fds)

    def await_ready(self, *, also_watch: Any = None) -> bool:
        """Wait for ``init()``; raise ``EntryScriptLoadError`` if it fails, ``WorkerError`` if we did.

        With ``also_watch`` (a socket), return False, killing the process, as soon as that
        socket becomes readable: a pool gives up a start whose requesting task went away.
        """
        if also_watch is not None and self.conn is not None:
            ready = wait([self.conn, also_watch])
            if self.conn not in ready:
                self.kill()
                return False
        reply = self._receive(None)
        if reply is not None and reply.get("category") == "framework":
            self.kill()
            raise WorkerError(f"{reply.get('message', '')}\n{reply.get('traceback', '')}".rstrip())
        if reply is None or not reply.get("ok"):
            self.kill()
            reply = reply or {"message": "the worker process died while loading the entry script"}
            raise EntryScriptLoadError(reply.get("message", ""), reply.get("traceback", ""))
        self.init_seconds = float(reply.get("init_seconds", 0.0))
        return True

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _receive(self, timeout: float | None) -> dict[str, Any] | None:
        """Return the next message, or None if the process died or ``timeout`` passed.

        ``timed_out`` tells the two apart: the connection closes a moment before the OS reports
        the process as exited, so ``alive()`` cannot.
        """
        # kill() may run meanwhile, from on_kill in a signal handler: hold the connection here.
        conn = self.conn
        self.timed_out = False
        if conn is None:
            return None
        try:
            if not conn.poll(timeout):
                self.timed_out = True
                return None
            return dict(conn.recv())
        except (EOFError, OSError):
            return None

    def run(self, mb: MiniBatch, part_path: str | None, fmt: str, timeout: float) -> TryResult:
        """Run one mini-batch; a ``run()`` longer than ``timeout`` kills the process."""
        assert self.conn is not None
        request = {
            "cmd": "run",
            "mini_batch": mb.to_dict(),
            "part_path": part_path,
            "format": fmt,
            "task_pid": os.getpid(),
            "attach_output": self.attach_output,
        }
        try:
            self.conn.send(request)
            if self.attach_output:
                send_fds(self.conn, (1, 2))
        except (OSError, ValueError):
            return self._died(mb)
        reply = self._receive(READ_TIMEOUT)
        if reply is None:
            return self._died(mb)
        if reply.get("event") != "started":
            return TryResult.from_reply(reply)
        items = reply.get("items")
        started = time.perf_counter()
        reply = self._receive(timeout)
        if reply is not None and reply.get("event") == "returned":
            # The timeout bounds run() itself; counting and writing its results is the engine's work.
            reply = self._receive(READ_TIMEOUT)
            if reply is None:
                return self._died(mb, items, time.perf_counter() - started)
        if reply is None:
            elapsed = time.perf_counter() - started
            if self.timed_out:
                self.kill()
                return TryResult(
                    ok=False,
                    items=items,
                    run_seconds=elapsed,
                    category="timeout",
                    message=f"run() did not return within run_invocation_timeout={timeout:g}s; the worker "
                    "process was killed. Raise run_invocation_timeout or make mini_batch_size smaller",
                )
            return self._died(mb, items, elapsed)
        return TryResult.from_reply(reply)

    def _died(self, mb: MiniBatch, items: int | None = None, elapsed: float = 0.0) -> TryResult:
        code = self.exit_code()
        self.kill()
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return TryResult(
            ok=False,
            items=items,
            run_seconds=elapsed,
            category="worker_died",
            message=f"the worker process died during mini-batch {mb.id} ({how}); "
            "it may have run out of memory or called os._exit",
        )

    def exit_code(self) -> int | None:
        """Return how the process exited; its connection is closed, so give the OS a moment."""
        if self.process is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout=5)
        return None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def shutdown(self, timeout: float = 30.0) -> TryResult | None:
        """Call ``shutdown()`` in the script and stop the process; kill it if it does not stop."""
        if not self.alive() or self.conn is None:
            self.kill()
            return None
        result = None
        try:
            self.conn.send({"cmd": "shutdown"})
            reply = self._receive(timeout)
            result = TryResult.from_reply(reply) if reply else None
            assert self.process is not None
            self.process.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()
        return result

    def kill(self) -> None:
        """Kill the process and everything it started."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
            self.process.wait()
        # Another thread (a pool stopping, on_kill) may kill this worker at the same time.
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
