"""What a pool and its tasks agree on: the pool folder, the pool's key, and the messages they send.

A message is a length-prefixed JSON object on a Unix socket, optionally carrying file
descriptors (``SCM_RIGHTS``); never pickle. Both ends check that the other runs as this user
(``SO_PEERCRED``), and the pool folder is refused if another user could plant a socket in it.
A pool starts and stops under a lock file next to its socket (:func:`start_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from airflow_parallelrun.core.execution.runner import WorkerSettings

POOL_DIR_ENV = "PARALLELRUN_POOL_DIR"
_HEADER = struct.Struct("!I")
_PEER_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid


class PoolUnavailable(RuntimeError):
    """No pool could be started or reached; the task runs a worker of its own instead."""


def pool_dir() -> str:
    """Return the folder of this user's pools, made readable by its owner only.

    Raise ``PoolUnavailable`` if it is a symbolic link, belongs to another user, or can be
    written by other users: whoever could plant a socket there could receive a task's output.
    """
    path = pool_dir_path()
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


def pool_dir_path() -> str:
    """Return where this user's pool folder is, without making or checking it."""
    return os.environ.get(POOL_DIR_ENV) or os.path.join(
        tempfile.gettempdir(), f"parallelrun-pools-{os.getuid()}"
    )


def peer_uid(sock: socket.socket) -> int:
    """Return the user id of the process at the other end of the Unix socket ``sock``."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise PoolUnavailable(
            "warm workers need SO_PEERCRED (Linux) to check who is at the other end of a pool "
            "socket; set warm_workers=False on this platform"
        )
    data = sock.getsockopt(socket.SOL_SOCKET, option, _PEER_CREDENTIALS.size)
    return int(_PEER_CREDENTIALS.unpack(data)[1])


def peer_closed(sock: socket.socket) -> bool:
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


def short_hash(value: Any) -> str:
    """Return 12 hex digits of the SHA-256 of ``value`` as JSON: one half of a pool's key."""
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
    #: How many GPUs the node's workers share (None: count the node's; 0: assign none).
    gpus_per_node: int | None = None
    #: Seconds between two samples of the workers' resource use (0: none); see ``resource_monitor``.
    monitor_interval: float = 0.0

    def key(self) -> str:
        script = self.settings.entry_script
        try:
            stat = os.stat(script)
            version: Any = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            version = None
        engine = os.stat(os.path.join(os.path.dirname(os.path.dirname(__file__)), "worker.py")).st_mtime_ns
        rest = [asdict(self.settings), self.size, self.idle_timeout, version, sys.executable, engine]
        rest.append(self.gpus_per_node)
        if self.monitor_interval:  # absent when off: the keys of pools without samples stay as they were
            rest.append(self.monitor_interval)
        return f"{short_hash(self.output_location)}-{short_hash(rest)}"

    def with_python(self, python: str) -> PoolSpec:
        """Return this spec with its workers in ``python``; the key changes with it, so runs in
        different environments never share a warm worker."""
        return replace(self, settings=replace(self.settings, python=python))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settings": asdict(self.settings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolSpec:
        settings = dict(data["settings"])
        settings["arguments"] = tuple(settings.get("arguments") or ())
        return cls(**{**data, "settings": WorkerSettings(**settings)})


# -- the wire: a length-prefixed JSON message, optionally carrying file descriptors ----------------


def send_message(sock: socket.socket, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
    """Send ``message`` on ``sock``, with the descriptors ``fds`` attached to its first bytes."""
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


def receive_message(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
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
def start_lock(sock_path: str, *, wait: float | None = None) -> Iterator[int | None]:
    """Hold the lock under which the pool at ``sock_path`` starts and stops (None: not got)."""
    fd = _lock(sock_path[:-5] + ".lock", wait=wait)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)
