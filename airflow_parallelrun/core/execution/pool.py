"""Warm workers: entry-script processes kept alive on a node across the task instances of a run.

Airflow starts a new process for every task instance. Were each to start its own entry-script
worker, imports and ``init()`` would be paid once per mini-batch; Azure pays them once per worker
process. A *pool* keeps the workers of one run's entry script warm on one node, and each mapped
task instance borrows one for its mini-batch (a *lease*), so every task instance still stands
for its mini-batch, with its own tries, timeout, part and status.

- **Found** by a key: a hash of the run's output location (first part) and of the entry script
  (its path, size and modification time), arguments, environment variables, logging level, the
  pool size and the Python interpreter (second part). The pool listens on the Unix socket
  ``<pool dir>/<key>.sock``; the pool dir is ``$PARALLELRUN_POOL_DIR`` or
  ``<tmp>/parallelrun-pools-<uid>``, readable by its owner only. It is a cache, not state:
  nothing another node needs lives there, and a run works the same without it.
- **Trusted** only as far as it is this user's: a pool folder that is a symbolic link, belongs
  to another user or can be written by others is refused, and both ends of a pool socket check
  that the other runs as this user (``SO_PEERCRED``). Every message is JSON, never pickle. The
  pool spec, with its environment variables, reaches the pool on its stdin, never on disk.
- **Started** by the partition task (``warm_pool``), which also has it start its workers at once,
  so imports and ``init()`` run while Airflow schedules the run tasks (what they print is kept
  and shown in the log of the first task that leases each one); on other nodes by the first
  task instance that finds no pool. Under a file lock so two tasks never start two, as a
  process of its own session (``python -m airflow_parallelrun.core.execution.pool``) that outlives the
  task. It starts further workers on demand.
- **Limited** to ``process_count_per_node`` workers; a lease waits for a free one.
- **Leased**: the task sends its stdout and stderr and receives the worker's socket (SCM_RIGHTS)
  and process id. It talks to the worker directly, as to a worker of its own, and the worker
  prints into the task's log. It gives the worker back healthy, or kills it.
- **Timed out** as before: a ``run()`` past ``run_invocation_timeout`` is killed by the task
  (the worker's process group); the pool starts a fresh worker, with ``init()``, on the next lease.
- **Recovered**: a lease that ends without a healthy release (the task died, was killed, or its
  worker did) kills the worker, which may be in the middle of a ``run()``. A worker exits when
  its pool dies (it watches its parent). A dead pool leaves a stale socket, which the next task
  removes before starting a new pool. If a pool cannot start at all, the task runs its own worker.
- **Cleaned up**: a pool idle for ``worker_idle_timeout`` seconds (no lease, no lease waiting,
  no worker starting) calls ``shutdown()`` in each worker, removes its socket and exits; the
  aggregate task stops the run's pools on its node at once. The pool's own log (and what
  ``shutdown()`` prints) is ``<key>.log``, its process id ``<key>.pid``; a pool that stops
  removes them, its lock and its workers' folders, but keeps its log if it logged a warning.
  A starting pool sweeps what killed tasks and pools left more than a day ago
  (:func:`sweep_leftovers`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from airflow_parallelrun.core.errors import EntryScriptLoadError
from airflow_parallelrun.core.execution.entry_script import TASK_PID_ENV
from airflow_parallelrun.core.execution.runner import _LIVE, WorkerProcess, WorkerSettings
from airflow_parallelrun.core.execution.worker import Channel

log = logging.getLogger(__name__)

POOL_DIR_ENV = "PARALLELRUN_POOL_DIR"
#: Seconds a task waits for a pool it started to listen.
START_TIMEOUT = 60.0
#: Seconds after which what a killed task or pool left behind is swept.
LEFTOVER_AGE = 24 * 3600.0
_HEADER = struct.Struct("!I")
_PEER_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid


class PoolUnavailable(RuntimeError):
    """No pool could be started or reached; the task runs a worker of its own instead."""


class _ClientGone(Exception):
    """The task asking for a worker went away while it waited."""


def pool_dir() -> str:
    """Return the folder of this user's pools, made readable by its owner only.

    Raise ``PoolUnavailable`` if it is a symbolic link, belongs to another user, or can be
    written by other users: whoever could plant a socket there could receive a task's output.
    """
    path = _pool_dir_path()
    os.makedirs(path, mode=0o700, exist_ok=True)
    fix = f"remove it, or set {POOL_DIR_ENV} to a folder of your own"
    try:
        # O_NOFOLLOW: the checks below are about the folder itself, never where a link points.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        what = "a symbolic link" if os.path.islink(path) else f"not a usable folder ({exc.strerror})"
        raise PoolUnavailable(f"the pool folder {path} is {what}; {fix}") from exc
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise PoolUnavailable(
                f"the pool folder {path} belongs to uid {info.st_uid}, not to this user "
                f"(uid {os.getuid()}); {fix}"
            )
        if info.st_mode & 0o022:
            raise PoolUnavailable(
                f"the pool folder {path} can be written by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}); run `chmod 700 {path}`, or {fix}"
            )
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def _pool_dir_path() -> str:
    return os.environ.get(POOL_DIR_ENV) or os.path.join(
        tempfile.gettempdir(), f"parallelrun-pools-{os.getuid()}"
    )


def _peer_uid(sock: socket.socket) -> int:
    """Return the user id of the process at the other end of the Unix socket ``sock``."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise PoolUnavailable(
            "warm workers need SO_PEERCRED (Linux) to check who is at the other end of a pool "
            "socket; set warm_workers=False on this platform"
        )
    data = sock.getsockopt(socket.SOL_SOCKET, option, _PEER_CREDENTIALS.size)
    return int(_PEER_CREDENTIALS.unpack(data)[1])


def _short_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PoolSpec:
    """What the workers of one pool run. ``settings.output_dir`` "" gives each worker its own.

    A run whose output is remote gives each worker a local output folder of its own, which the
    task that leased the worker uploads after each mini-batch.
    """

    settings: WorkerSettings
    size: int
    idle_timeout: float
    output_location: str

    def key(self) -> str:
        script = self.settings.entry_script
        try:
            stat = os.stat(script)
            version: Any = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            version = None
        engine = os.stat(os.path.join(os.path.dirname(__file__), "worker.py")).st_mtime_ns
        rest = [asdict(self.settings), self.size, self.idle_timeout, version, sys.executable, engine]
        return f"{_short_hash(self.output_location)}-{_short_hash(rest)}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settings": asdict(self.settings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolSpec:
        settings = dict(data["settings"])
        settings["arguments"] = tuple(settings.get("arguments") or ())
        return cls(**{**data, "settings": WorkerSettings(**settings)})


# -- the wire: a length-prefixed JSON message, optionally carrying file descriptors ----------------


def _send(sock: socket.socket, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode()
    buffer = _HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [buffer], list(fds)) if fds else 0
    sock.sendall(buffer[sent:])


def _recv_exactly(sock: socket.socket, size: int, data: bytes = b"") -> bytes | None:
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _recv(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """Return the next message and the descriptors it carried; None at end of stream."""
    fds: list[int] = []
    if max_fds:
        head, fds, _, _ = socket.recv_fds(sock, _HEADER.size, max_fds)
    else:
        head = sock.recv(_HEADER.size)
    if not head:
        return None, fds
    header = _recv_exactly(sock, _HEADER.size, head)
    body = _recv_exactly(sock, _HEADER.unpack(header)[0]) if header else None
    return (json.loads(body) if body is not None else None), fds


# -- the task's side ---------------------------------------------------------------------------------


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
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        return self._pid

    def alive(self) -> bool:
        return not self._dead

    def _exit_code(self) -> int | None:
        """Ask the pool, which reaps the worker, how it exited."""
        if self.lease is None:
            return None
        try:
            self.lease.settimeout(10)
            _send(self.lease, {"cmd": "exit_code"})
            reply, _ = _recv(self.lease)
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
            _send(lease, {"cmd": "release", "healthy": healthy})
            _recv(lease)
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
            _send(sock, {"cmd": "lease", "pid": os.getpid()}, fds=(1, 2))
            reply, fds = _recv(sock, max_fds=1)
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
        _send(sock, {"cmd": "warm", "count": count})
        reply, _ = _recv(sock)
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
        uid = _peer_uid(sock)
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


def _lock(path: str, *, wait: float | None) -> int | None:
    """Take the lock file ``path`` (exclusive); return its descriptor, or None if not got in ``wait`` s.

    Whoever removes the lock file does so while holding it; a lock taken on a file that is no
    longer at ``path`` is therefore dropped and taken again on the file that is there now.
    """
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            if deadline is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            os.close(fd)
                            return None
                        time.sleep(0.05)
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def _start_lock(sock_path: str, *, wait: float | None = None) -> Iterator[int | None]:
    """Hold the lock under which the pool at ``sock_path`` starts and stops (None: not got)."""
    fd = _lock(sock_path[:-5] + ".lock", wait=wait)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _connect_or_start(path: str, spec: PoolSpec) -> socket.socket:
    sock = _connect(path)
    if sock is not None:
        return sock
    with _start_lock(path):
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
    for path in glob.glob(os.path.join(folder, f"{_short_hash(output_location)}-*.sock")):
        try:
            sock = _connect(path)
        except PoolUnavailable as exc:
            log.warning("not stopping %s: %s", path, exc)
            continue
        if sock is None:
            continue
        with sock, contextlib.suppress(OSError):
            sock.settimeout(10)
            _send(sock, {"cmd": "stop"})
            _recv(sock)
            stopped += 1
    return stopped


# -- leftovers ----------------------------------------------------------------------------------------

#: What a pool leaves in the pool folder under its key: socket, lock, log, process id, workers' folders.
_POOL_ENTRY = re.compile(r"^([0-9a-f]{12}-[0-9a-f]{12})\.(sock|lock|log|pid|d)$")


def sweep_leftovers(max_age: float = LEFTOVER_AGE) -> list[str]:
    """Remove what killed tasks and pools of this user left more than ``max_age`` seconds ago.

    That is the scratch folders and temporary files of the run step and of merges
    (``<tmp>/parallelrun-*``) and the files of pools that are gone, in the pool folder. Only
    what this project names so, owned by this user and untouched for ``max_age`` seconds (its
    newest file counts), is removed; a symbolic link is never followed nor removed, and a
    running pool's files are left alone. Return the paths removed.
    """
    removed: list[str] = []
    cutoff = time.time() - max_age
    tmp = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(tmp):
            if name.startswith("parallelrun-") and not name.startswith("parallelrun-pools-"):
                path = os.path.join(tmp, name)
                if _remove_if_old(path, cutoff):
                    removed.append(path)
    if not os.path.lexists(_pool_dir_path()):
        return removed  # no pool ever ran here: do not make its folder
    try:
        folder = pool_dir()
        names = os.listdir(folder)
    except (OSError, PoolUnavailable):
        return removed
    keys: dict[str, list[str]] = {}
    for name in names:
        match = _POOL_ENTRY.match(name)
        if match:
            keys.setdefault(match.group(1), []).append(name)
    for key, entries in sorted(keys.items()):
        removed += _sweep_pool(folder, key, entries, cutoff)
    return removed


def _sweep_pool(folder: str, key: str, entries: list[str], cutoff: float) -> list[str]:
    """Remove the old files of the pool ``key`` unless it is running or starting."""
    base = os.path.join(folder, key)
    if _pool_running(base + ".pid"):
        return []
    removed = []
    with _start_lock(base + ".sock", wait=0) as lock:
        if lock is None:
            return []  # a task is starting this pool right now
        for name in sorted(entries):
            path = os.path.join(folder, name)
            if not name.endswith(".lock") and _remove_if_old(path, cutoff):
                removed.append(path)
        if len(removed) == len([name for name in entries if not name.endswith(".lock")]):
            with contextlib.suppress(OSError):
                os.unlink(base + ".lock")  # while holding it: see _lock
                if f"{key}.lock" in entries:
                    removed.append(base + ".lock")
    return removed


def _pool_running(pid_path: str) -> bool:
    """Tell whether the pool whose process id file is ``pid_path`` runs: it holds that file locked."""
    try:
        fd = os.open(pid_path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _remove_if_old(path: str, cutoff: float) -> bool:
    """Remove the file or folder ``path`` if it is this user's and nothing in it changed since ``cutoff``."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        return False
    if not stat.S_ISDIR(info.st_mode):
        if info.st_mtime >= cutoff:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    for root, dirs, files in os.walk(path):  # never follows symbolic links
        for name in dirs + files:
            with contextlib.suppress(OSError):
                if os.lstat(os.path.join(root, name)).st_mtime >= cutoff:
                    return False
    if info.st_mtime >= cutoff:
        return False
    shutil.rmtree(path, ignore_errors=True)  # removes links inside, never what they point to
    return True


# -- the pool's side ---------------------------------------------------------------------------------


class Pool:
    """Serve leases of up to ``spec.size`` warm workers on the socket ``path``."""

    def __init__(self, spec: PoolSpec, path: str) -> None:
        self.spec = spec
        self.path = path
        self.scratch = path[:-5] + ".d"
        self.cond = threading.Condition()
        self.free: list[WorkerProcess] = []
        self.workers = 0  # started or starting, not yet discarded
        self.leases = 0
        self.started = 0
        self.last_used = time.monotonic()
        self.stop_requested = False
        self.closing = False
        # Leases waiting for a worker, and workers being warmed (still in import or init()): a
        # pool with either is not idle, or a slow init() would be paid twice.
        self.waiting = 0
        self.starting: set[WorkerProcess] = set()
        # Workers warmed ahead of any task and not yet leased, each with the file holding what
        # it printed while starting (None if it printed nothing).
        self.warmed: dict[WorkerProcess, str | None] = {}
        #: Files of this pool removed when it stops, by path, with their inode: a file of the same
        #: name may by then belong to the next pool of this key.
        self.own_files: dict[str, int] = {}
        self.keep_log = False

    def serve(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        inode = os.stat(self.path).st_ino
        listener.listen(128)
        listener.settimeout(0.5)
        log.info(
            "pool %s: up to %d workers of %s", self.path, self.spec.size, self.spec.settings.entry_script
        )
        while True:
            with contextlib.suppress(TimeoutError):
                client, _ = listener.accept()
                self._accept(client)
            with self.cond:
                if self._may_stop():
                    self.closing = True
                    break
        self._stop(listener, inode)

    def _accept(self, client: socket.socket) -> None:
        """Serve ``client`` in a thread of its own if it runs as this pool's user; else hang up."""
        try:
            uid = _peer_uid(client)
        except (OSError, PoolUnavailable) as exc:
            log.warning("pool %s: refused a connection whose user cannot be told: %s", self.path, exc)
            client.close()
            return
        if uid != os.getuid():
            log.warning(
                "pool %s: refused a connection from uid %d (this pool serves uid %d only)",
                self.path,
                uid,
                os.getuid(),
            )
            client.close()
            return
        client.settimeout(None)
        threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _may_stop(self) -> bool:
        """Tell whether the pool stops now: asked to or idle, with no lease out and none waiting.

        A worker still starting keeps an idle pool up; a stop request kills it.
        """
        if self.leases or self.waiting:
            return False
        if self.stop_requested:
            return True
        return not self.starting and time.monotonic() - self.last_used > self.spec.idle_timeout

    def _stop(self, listener: socket.socket, inode: int) -> None:
        """Stop the workers and remove this pool's files, under the lock its starts take."""
        reason = "asked to" if self.stop_requested else "idle"
        with _start_lock(self.path, wait=30.0) as lock:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == inode:
                    os.unlink(self.path)
            listener.close()
            log.info("pool %s: stopping (%s)", self.path, reason)
            with self.cond:
                starting = list(self.starting)
            for worker in starting:
                worker.kill()
            for worker in self.free:
                result = worker.shutdown()
                if result is not None and not result.ok:
                    log.warning("shutdown() failed: %s\n%s", result.message, result.traceback)
            for output in self.warmed.values():
                if output:
                    with contextlib.suppress(OSError):
                        os.unlink(output)
            shutil.rmtree(self.scratch, ignore_errors=True)
            if lock is None:
                log.warning("pool %s: its lock stayed taken; its files are left to the sweep", self.path)
                return
            for path, own in self.own_files.items():
                if path.endswith(".log") and self.keep_log:
                    continue
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_ino == own:
                        os.unlink(path)
            with contextlib.suppress(OSError):
                os.unlink(self.path[:-5] + ".lock")  # while holding it: see _lock

    def _handle(self, client: socket.socket) -> None:
        with client:
            message, fds = _recv(client, max_fds=2)
            try:
                if message is None:
                    return
                if message.get("cmd") == "stop":
                    with self.cond:
                        self.stop_requested = True
                    _send(client, {"ok": True})
                elif message.get("cmd") == "warm":
                    _send(client, {"ok": True, "starting": self._warm(int(message.get("count") or 0))})
                elif message.get("cmd") == "lease":
                    self._lease(client, message, fds)
            except OSError as exc:
                log.warning("pool %s: a client connection failed: %s", self.path, exc)
            except Exception:
                log.exception("pool %s: error of airflow-parallelrun serving %s", self.path, message)
            finally:
                for fd in fds:
                    os.close(fd)

    def _lease(self, client: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
        try:
            worker, fresh = self._acquire(client, message, fds)
        except EntryScriptLoadError as exc:
            _send(client, {"ok": False, "message": str(exc), "traceback": exc.traceback})
            return
        except _ClientGone:
            return
        except Exception as exc:
            # Not the entry script's fault: the task hears it as the pool's, with the traceback.
            log.exception("pool %s: could not start a worker", self.path)
            _send(
                client,
                {
                    "ok": False,
                    "framework": True,
                    "message": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                },
            )
            return
        if worker is None:
            _send(client, {"ok": False, "retry": True})
            return
        healthy = False
        try:
            assert worker.conn is not None
            # A worker warmed ahead of any task counts as fresh for the first task it serves.
            fresh = fresh or worker in self.warmed
            init_output = self.warmed.pop(worker, None)
            reply = {
                "ok": True,
                "pid": worker.pid,
                "init_seconds": worker.init_seconds if fresh else 0.0,
                "fresh": fresh,
                "init_output": init_output,
                "output_dir": worker.settings.output_dir,
                "log_dir": worker.settings.log_dir,
            }
            _send(client, reply, fds=(worker.conn.fileno(),))
            while True:
                request, _ = _recv(client)
                if request is None:
                    break
                if request.get("cmd") == "exit_code":
                    _send(client, {"code": _wait(worker)})
                elif request.get("cmd") == "release":
                    healthy = bool(request.get("healthy")) and worker.alive()
                    _send(client, {"ok": True})
                    break
        finally:
            self._give_back(worker, healthy)

    def _acquire(
        self, client: socket.socket, message: dict[str, Any], fds: list[int]
    ) -> tuple[WorkerProcess | None, bool]:
        with self.cond:
            self.waiting += 1
            try:
                while True:
                    if self.closing:
                        return None, False
                    while self.free:
                        worker = self.free.pop()
                        if worker.alive():
                            self.leases += 1
                            return worker, False
                        worker.kill()
                        self.workers -= 1
                        self.warmed.pop(worker, None)
                    if self.workers < self.spec.size:
                        self.workers += 1
                        self.leases += 1
                        self.started += 1
                        number = self.started
                        break
                    self.cond.wait(0.5)
                    if _closed(client):
                        raise _ClientGone
            finally:
                self.waiting -= 1
                self.last_used = time.monotonic()
        worker = WorkerProcess(self._settings(number))
        try:
            worker.launch(
                extra_env={TASK_PID_ENV: str(message.get("pid") or "")},
                output_fds=(fds[0], fds[1]) if len(fds) == 2 else None,
            )
            if not worker.await_ready(also_watch=client):
                raise _ClientGone
        except BaseException:
            # Whatever it was (the script's error, the task gone, or ours), this worker is no more;
            # the caller tells the task which it was.
            worker.kill()
            self._forget()
            raise
        log.info(
            "pool %s: worker %d (pid %s) ready, init() %.2fs",
            self.path,
            number,
            worker.pid,
            worker.init_seconds,
        )
        return worker, True

    def _warm(self, count: int) -> int:
        """Start up to ``count`` workers (never more than the pool's size) in the background."""
        started: list[tuple[int, WorkerProcess]] = []
        try:
            with self.cond:
                # Counted as starting at once, under the lock, so the pool is never idle meanwhile.
                while len(started) < count and self.workers < self.spec.size and not self.closing:
                    worker = WorkerProcess(self._settings(self.started + 1))
                    self.started += 1
                    self.workers += 1
                    self.starting.add(worker)
                    started.append((self.started, worker))
                self.last_used = time.monotonic()
        finally:
            for number, worker in started:
                threading.Thread(target=self._warm_one, args=(number, worker), daemon=True).start()
        return len(started)

    def _warm_one(self, number: int, worker: WorkerProcess) -> None:
        output = os.path.join(os.path.dirname(worker.settings.working_dir), "init-output.txt")
        warm = False
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                worker.launch(output_fds=(fd, fd))
            finally:
                os.close(fd)
            worker.await_ready()
            warm = True
        except EntryScriptLoadError as exc:
            if not self.closing:
                # The script's own error: the first lease starts a worker of its own and reports
                # it, with the script's traceback, to its task.
                log.warning("pool %s: worker %d: the entry script failed to load: %s", self.path, number, exc)
        except Exception:
            if not self.closing:  # else the stop killed it
                log.exception(
                    "pool %s: warming worker %d failed (an error of airflow-parallelrun)", self.path, number
                )
        finally:
            with self.cond:
                self.starting.discard(worker)
                if warm and not self.closing:
                    self.free.append(worker)
                    self.warmed[worker] = output if os.path.getsize(output) else None
                else:
                    warm = False
                    self.workers -= 1
                self.last_used = time.monotonic()
                self.cond.notify_all()
            if not warm:
                worker.kill()
        if warm:
            log.info(
                "pool %s: worker %d (pid %s) warm, init() %.2fs",
                self.path,
                number,
                worker.pid,
                worker.init_seconds,
            )

    def _settings(self, number: int) -> WorkerSettings:
        own = os.path.join(self.scratch, f"w{number}")
        work = os.path.join(own, "work")
        os.makedirs(work, exist_ok=True)
        settings = replace(self.spec.settings, working_dir=work)
        if not settings.output_dir:
            output = os.path.join(own, "output")
            user_logs = os.path.join(output, "_parallelrun", "logs", "user")
            os.makedirs(user_logs, exist_ok=True)
            settings = replace(settings, output_dir=output, log_dir=user_logs)
        return settings

    def _forget(self) -> None:
        with self.cond:
            self.workers -= 1
            self.leases -= 1
            self.last_used = time.monotonic()
            self.cond.notify_all()

    def _give_back(self, worker: WorkerProcess, healthy: bool) -> None:
        if not healthy:
            worker.kill()
            self._forget()
            return
        with self.cond:
            self.free.append(worker)
            self.leases -= 1
            self.last_used = time.monotonic()
            self.cond.notify_all()


def _wait(worker: WorkerProcess) -> int | None:
    if worker.process is None:
        return None
    with contextlib.suppress(subprocess.TimeoutExpired):
        return worker.process.wait(timeout=5)
    return None


def _closed(sock: socket.socket) -> bool:
    """Return True if the peer closed ``sock`` (it sends nothing while it waits for a lease)."""
    try:
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        finally:
            sock.setblocking(True)
    except OSError:
        return True


class _WarningSeen(logging.Handler):
    """Remember that the pool logged a warning or worse, so that its log is kept when it stops."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(logging.WARNING)
        self.pool = pool

    def emit(self, record: logging.LogRecord) -> None:
        self.pool.keep_log = True


def _sweep_quietly() -> None:
    try:
        removed = sweep_leftovers()
    except Exception:
        log.exception("sweeping old leftovers failed")
        return
    for path in removed:
        log.info("removed %s, left by a task or pool more than a day ago", path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    path = sys.argv[1]
    spec = PoolSpec.from_dict(json.loads(sys.stdin.read()))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    pool = Pool(spec, path)
    logging.getLogger().addHandler(_WarningSeen(pool))
    log_path = path[:-5] + ".log"
    with contextlib.suppress(OSError):
        if os.fstat(1).st_ino == os.lstat(log_path).st_ino:
            pool.own_files[log_path] = os.fstat(1).st_ino
    pid_file = path[:-5] + ".pid"
    # Held locked while the pool runs: how a sweep tells a running pool from a dead one's files.
    pid_fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    fcntl.flock(pid_fd, fcntl.LOCK_EX)
    os.write(pid_fd, str(os.getpid()).encode())
    pool.own_files[pid_file] = os.fstat(pid_fd).st_ino
    threading.Thread(target=_sweep_quietly, daemon=True).start()
    try:
        pool.serve()
    finally:
        with contextlib.suppress(OSError):
            if os.lstat(pid_file).st_ino == pool.own_files[pid_file]:
                os.unlink(pid_file)
        os.close(pid_fd)


if __name__ == "__main__":
    main()
