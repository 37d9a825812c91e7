"""The pool's side: a process serving leases of warm workers on its socket until idle or stopped.

It runs as ``python -m airflow_parallelrun.core.execution.pool SOCKET`` (``__main__.py`` starts
it) and reads its :class:`PoolSpec` from stdin. Its log is ``<key>.log``, its process id
``<key>.pid`` (held locked while it runs, which is how a sweep tells a running pool from a dead
one's files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
import traceback
from dataclasses import replace
from typing import Any

from airflow_parallelrun.core.errors import EntryScriptLoadError
from airflow_parallelrun.core.execution.entry_script import TASK_PID_ENV
from airflow_parallelrun.core.execution.gpus import WorkerSlots
from airflow_parallelrun.core.execution.pool.protocol import (
    PoolSpec,
    PoolUnavailable,
    peer_closed,
    peer_uid,
    receive_message,
    send_message,
    start_lock,
)
from airflow_parallelrun.core.execution.resource_monitor import start_monitor
from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings

log = logging.getLogger(__name__)


class _ClientGone(Exception):
    """The task asking for a worker went away while it waited."""


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
        self.slots = WorkerSlots(spec.gpus_per_node)  # worker slot i gets GPU i % n
        #: Samples of the workers' resource use, in ``<key>.perf.csv``, published by the run's tasks.
        self.monitor = start_monitor(path[:-5] + ".perf.csv", spec.monitor_interval)

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
            uid = peer_uid(client)
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
        """Tell whether the pool stops now: asked to or idle (none starting), no lease out, none waiting."""
        if self.leases or self.waiting:
            return False
        if self.stop_requested:
            return True
        return not self.starting and time.monotonic() - self.last_used > self.spec.idle_timeout

    def _stop(self, listener: socket.socket, inode: int) -> None:
        """Stop the workers and remove this pool's files, under the lock its starts take."""
        reason = "asked to" if self.stop_requested else "idle"
        if self.monitor is not None:
            self.monitor.stop()  # a last sample, of the workers still up
        with start_lock(self.path, wait=30.0) as lock:
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
                os.unlink(self.path[:-5] + ".lock")  # while holding it: see protocol._lock

    def _handle(self, client: socket.socket) -> None:
        with client:
            message, fds = receive_message(client, max_fds=2)
            try:
                if message is None:
                    return
                if message.get("cmd") == "stop":
                    with self.cond:
                        self.stop_requested = True
                    send_message(client, {"ok": True})
                elif message.get("cmd") == "warm":
                    send_message(client, {"ok": True, "starting": self._warm(int(message.get("count") or 0))})
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
            send_message(client, {"ok": False, "message": str(exc), "traceback": exc.traceback})
            return
        except _ClientGone:
            return
        except Exception as exc:
            # Not the entry script's fault: the task hears it as the pool's, with the traceback.
            log.exception("pool %s: could not start a worker", self.path)
            send_message(
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
            send_message(client, {"ok": False, "retry": True})
            return
        healthy = False
        try:
            assert worker.conn is not None
            send_message(client, self._lease_reply(worker, fresh), fds=(worker.conn.fileno(),))
            while True:
                request, _ = receive_message(client)
                if request is None:
                    break
                if request.get("cmd") == "exit_code":
                    send_message(client, {"code": worker.exit_code()})
                elif request.get("cmd") == "release":
                    healthy = bool(request.get("healthy")) and worker.alive()
                    send_message(client, {"ok": True})
                    break
        finally:
            self._give_back(worker, healthy)

    def _lease_reply(self, worker: WorkerProcess, fresh: bool) -> dict[str, Any]:
        """Return what a task is told of the worker it leases (its socket goes along)."""
        # A worker warmed ahead of any task counts as fresh for the first task it serves.
        fresh = fresh or worker in self.warmed
        init_output = self.warmed.pop(worker, None)
        return {
            "ok": True,
            "pid": worker.pid,
            "init_seconds": worker.init_seconds if fresh else 0.0,
            "fresh": fresh,
            "init_output": init_output,
            "output_dir": worker.settings.output_dir,
            "log_dir": worker.settings.log_dir,
        }

    def _acquire(
        self, client: socket.socket, message: dict[str, Any], fds: list[int]
    ) -> tuple[WorkerProcess | None, bool]:
        """Return a worker for the task at ``client`` and whether it was started for it (None: closing)."""
        worker, number = self._reserve(client)
        if worker is not None or not number:
            return worker, False
        return self._start_for(client, message, fds, number), True

    def _reserve(self, client: socket.socket) -> tuple[WorkerProcess | None, int]:
        """Wait for a free worker or room for one more; return it, or the number of the one to start.

        Return ``(None, 0)`` when the pool is closing; raise ``_ClientGone`` if the task goes away.
        """
        with self.cond:
            self.waiting += 1
            try:
                while True:
                    if self.closing:
                        return None, 0
                    while self.free:
                        worker = self.free.pop()
                        if worker.alive():
                            self.leases += 1
                            return worker, 0
                        worker.kill()
                        self.workers -= 1
                        self.warmed.pop(worker, None)
                        self.slots.free(worker)
                    if self.workers < self.spec.size:
                        self.workers += 1
                        self.leases += 1
                        self.started += 1
                        return None, self.started
                    self.cond.wait(0.5)
                    if peer_closed(client):
                        raise _ClientGone
            finally:
                self.waiting -= 1
                self.last_used = time.monotonic()

    def _start_for(
        self, client: socket.socket, message: dict[str, Any], fds: list[int], number: int
    ) -> WorkerProcess:
        """Start worker ``number`` for the task at ``client``, its prints going to the task's output."""
        worker = self._new_worker(number)
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
            self._forget(worker)
            raise
        log.info(
            "pool %s: worker %d (pid %s) ready, init() %.2fs",
            self.path,
            number,
            worker.pid,
            worker.init_seconds,
        )
        return worker

    def _warm(self, count: int) -> int:
        """Start up to ``count`` workers (never more than the pool's size) in the background."""
        started: list[tuple[int, WorkerProcess]] = []
        try:
            with self.cond:
                # Counted as starting at once, under the lock, so the pool is never idle meanwhile.
                while len(started) < count and self.workers < self.spec.size and not self.closing:
                    worker = self._new_worker(self.started + 1)
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
                    self.slots.free(worker)
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

    def _new_worker(self, number: int) -> WorkerProcess:
        """Return worker ``number``, not started, in the lowest free slot, with that slot's GPU."""
        worker = WorkerProcess(self._settings(number))
        with self.cond:
            self.slots.place(worker)
        return worker

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

    def _forget(self, worker: WorkerProcess) -> None:
        self._give_back(worker, healthy=False, gone=True)

    def _give_back(self, worker: WorkerProcess, healthy: bool, gone: bool = False) -> None:
        if not (healthy or gone):
            worker.kill()
        with self.cond:
            if healthy:
                self.free.append(worker)
            else:
                self.slots.free(worker)
                self.workers -= 1
            self.leases -= 1
            self.last_used = time.monotonic()
            self.cond.notify_all()
