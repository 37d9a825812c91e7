"""Sweep what killed tasks and pools left behind: scratch folders, and the files of dead pools."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time

from airflow_parallelrun.core.execution.pool.protocol import (
    PoolUnavailable,
    pool_dir,
    pool_dir_path,
    start_lock,
)

#: Seconds after which what a killed task or pool left behind is swept.
LEFTOVER_AGE = 24 * 3600.0


_POOL_ENTRY = re.compile(r"^([0-9a-f]{12}-[0-9a-f]{12})\.(sock|lock|log|pid|d|perf\.csv(?:\.published)?)$")


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
    if not os.path.lexists(pool_dir_path()):
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
    with start_lock(base + ".sock", wait=0) as lock:
        if lock is None:
            return []  # a task is starting this pool right now
        for name in sorted(entries):
            path = os.path.join(folder, name)
            if not name.endswith(".lock") and _remove_if_old(path, cutoff):
                removed.append(path)
        if len(removed) == len([name for name in entries if not name.endswith(".lock")]):
            with contextlib.suppress(OSError):
                os.unlink(base + ".lock")  # while holding it: see protocol._lock
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
