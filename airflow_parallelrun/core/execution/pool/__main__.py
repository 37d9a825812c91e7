"""Run a pool: ``python -m airflow_parallelrun.core.execution.pool SOCKET``, its spec on stdin.

The process logs to its stdout (the pool's ``<key>.log``, opened by the task that starts it),
holds ``<key>.pid`` locked while it serves, and sweeps old leftovers once in the background.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import threading

from airflow_parallelrun.core.execution.pool.leftovers import sweep_leftovers
from airflow_parallelrun.core.execution.pool.protocol import PoolSpec
from airflow_parallelrun.core.execution.pool.server import Pool

log = logging.getLogger("airflow_parallelrun.core.execution.pool.server")


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


if __name__ == "__main__":  # importing this module (walking the package, say) starts nothing
    main()
