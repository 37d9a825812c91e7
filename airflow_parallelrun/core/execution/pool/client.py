"""The task's side of a pool: lease a warm worker, warm a pool ahead of the tasks, stop the pools.

A task that finds no pool listening starts one, under the pool's start lock, as a process of
its own session (``python -m airflow_parallelrun.core.execution.pool``) that outlives the task.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from airflow_parallelrun.core.errors import EntryScriptLoadError
from airflow_parallelrun.core.execution.channel import Channel
from airflow_parallelrun.core.execution.pool.protocol import (
    POOL_DIR_ENV,
    PoolSpec,
    PoolUnavailable,
    peer_uid,
    pool_dir,
    receive_message,
    send_message,
    short_hash,
    start_lock,
)
from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings, track_worker

log = logging.getLogger(__name__)

#: Seconds a task waits for a pool it started to listen.
START_TIMEOUT = 60.0


class LeasedWorker(WorkerProcess):
    """A pool's warm worker, borrowed by this task: run mini-batches, then give it back or kill it."""

    def __init__(
        self, settings: WorkerSettings, lease: socket.socket, reply: dict[str, Any], fd: int
    ) -> None:
        super().__init__(settings)
        self.lease: socket.socket | None = lease
        self._pid = int(reply["pid"])
        self.conn = Channel(fd)
        self.init_seconds = float(reply.get("init_seconds") or 0.0)
        self.fresh = bool(reply.get("fresh"))
        #: What the script printed while a pool warmed this worker ahead of any task, if anything.
        self.init_output = _take_text(reply.get("init_output") or "")
        self.attach_output = True
        self._dead = False
        self._exited = False
        track_worker(self)

    @property
    def pid(self) -> int | None:
        return self._pid

    def alive(self) -> bool:
        return not self._dead

    def exit_code(self) -> int | None:
        """Ask the pool, which reaps the worker, how it exited."""
        if self.lease is None:
            return None
        try:
            self.lease.settimeout(10)
            send_message(self.lease, {"cmd": "exit_code"})
            reply, _ = receive_message(self.lease)
        except OSError:
            return None
        self._exited = reply is not None and reply.get("code") is not None
        return reply.get("code") if reply else None

    def kill(self) -> None:
        """Kill the worker and everything it started; the pool replaces it."""
        if self._dead:
            return
        self._dead = True
        if not self._exited:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pid, signal.SIGKILL)
        self._close(healthy=False)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Give the worker back to its pool, warm; ``shutdown()`` runs when the pool stops."""
        if not self._dead:
            self._dead = True
            self._close(healthy=True)
        return None

    def _close(self, *, healthy: bool) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        lease, self.lease = self.lease, None
        if lease is None:
            return
        with contextlib.suppress(OSError):
            lease.settimeout(10)
            send_message(lease, {"cmd": "release", "healthy": healthy})
            receive_message(lease)
        lease.close()


def lease_worker(spec: PoolSpec) -> LeasedWorker:
    """Borrow a warm worker from this node's pool for ``spec``, starting the pool if there is none.

    Raise ``EntryScriptLoadError`` when the entry script cannot load, and ``PoolUnavailable``
    when no pool can be reached.
    """
    path = os.path.join(pool_dir(), spec.key() + ".sock")
    for _ in range(5):
        sock = _connect_or_start(path, spec)
        try:
            send_message(sock, {"cmd": "lease", "pid": os.getpid()}, fds=(1, 2))
            reply, fds = receive_message(sock, max_fds=1)
        except OSError:
            reply, fds = None, []
        if reply is None or reply.get("retry"):
            # The pool is closing (idle): start or find the next one.
            sock.close()
            time.sleep(0.05)
            continue
        if not reply.get("ok"):
            sock.close()
            if reply.get("framework"):
                raise PoolUnavailable(
                    f"the worker pool at {path} could not start a worker: {reply.get('message', '')} "
                    f"(an error of airflow-parallelrun, not of the entry script; the pool's log is "
                    f"{path[:-5]}.log)\n{reply.get('traceback', '')}".rstrip()
                )
            raise EntryScriptLoadError(reply.get("message", ""), reply.get("traceback", ""))
        settings = replace(spec.settings, output_dir=reply["output_dir"], log_dir=reply["log_dir"])
        sock.settimeout(None)
        return LeasedWorker(settings, sock, reply, fds[0])
    raise PoolUnavailable(f"the worker pool at {path} kept closing; see {path[:-5]}.log")


def warm_pool(spec: PoolSpec, count: int) -> int:
    """Have this node's pool for ``spec`` start ``count`` workers now; return how many it starts.

    The workers import the entry script and run ``init()`` in the background; what they print
    meanwhile is kept and shown in the log of the first task that leases each one. Raise
    ``PoolUnavailable`` when no pool can be reached.
    """
    path = os.path.join(pool_dir(), spec.key() + ".sock")
    sock = _connect_or_start(path, spec)
    with sock:
        sock.settimeout(10)
        send_message(sock, {"cmd": "warm", "count": count})
        reply, _ = receive_message(sock)
    return int((reply or {}).get("starting") or 0)


def _take_text(path: str, limit: int = 64 * 1024) -> str:
    """Return the text of the file at ``path`` (its last ``limit`` bytes) and remove it."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - limit, 0))
            text = f.read().decode(errors="replace")
        os.unlink(path)
    except OSError:
        return ""
    return text


def _connect(path: str) -> socket.socket | None:
    """Connect to the pool at ``path``; None if none listens. Refuse a pool of another user."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        uid = peer_uid(sock)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as exc:
        sock.close()
        raise PoolUnavailable(f"cannot reach the worker pool at {path}: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    if uid != os.getuid():
        sock.close()
        raise PoolUnavailable(
            f"the worker pool socket {path} is served by uid {uid}, not by this user (uid "
            f"{os.getuid()}); refusing to send it anything. Remove the socket, or set {POOL_DIR_ENV} "
            "to a folder of your own"
        )
    return sock


def _connect_or_start(path: str, spec: PoolSpec) -> socket.socket:
    sock = _connect(path)
    if sock is not None:
        return sock
    with start_lock(path):
        sock = _connect(path)
        if sock is not None:
            return sock
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead pool's socket
        return _start(path, spec)


def _start(path: str, spec: PoolSpec) -> socket.socket:
    log_path = path[:-5] + ".log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        # The spec holds the run's environment variables: it goes on stdin, never into a file.
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_parallelrun.core.execution.pool", path],
            stdin=subprocess.PIPE,
            stdout=log_fd,
            stderr=log_fd,
            cwd=os.path.dirname(path),
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    assert process.stdin is not None
    process.stdin.write(json.dumps(spec.to_dict()).encode())
    process.stdin.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        sock = _connect(path)
        if sock is not None:
            log.info("started worker pool %s (pid %d) for %s", path, process.pid, spec.settings.entry_script)
            return sock
        if process.poll() is not None:
            break
        time.sleep(0.02)
    with contextlib.suppress(OSError), open(log_path) as f:
        tail = f.read()[-2000:]
    process.kill()
    raise PoolUnavailable(f"the worker pool {path} did not start; its log says:\n{tail}")


def stop_pools(output_location: str) -> int:
    """Ask this node's pools of the run writing to ``output_location`` to stop; return how many.

    A pool stops once its leases end: it calls ``shutdown()`` in each worker and exits.
    """
    try:
        folder = pool_dir()
    except (OSError, PoolUnavailable):
        return 0
    stopped = 0
    for path in glob.glob(os.path.join(folder, f"{short_hash(output_location)}-*.sock")):
        try:
            sock = _connect(path)
        except PoolUnavailable as exc:
            log.warning("not stopping %s: %s", path, exc)
            continue
        if sock is None:
            continue
        with sock, contextlib.suppress(OSError):
            sock.settimeout(10)
            send_message(sock, {"cmd": "stop"})
            receive_message(sock)
            stopped += 1
    return stopped
