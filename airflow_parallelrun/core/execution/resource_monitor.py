"""Sample the CPU, resident memory and GPU memory of a node's worker processes into a local csv.

Azure's parallel job dumps each node's resource use every ``resource_monitor_interval``
seconds; here a warm-worker pool (or, without warm workers, a run task) samples the processes
it started (its direct children: the entry-script workers) and the node, with psutil, and
appends one row per process and one for the node to a csv file on local disk. Appending there
is cheap; the file reaches the run's storage whole (see ``perf_files``), never a row at a time.

GPU memory comes from ``nvidia-smi`` when it is on the PATH; without it the column stays empty.
Sampling never raises: a process that ends between listing and reading is skipped, and a
failure of psutil or nvidia-smi is logged once and leaves its columns empty.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

#: The columns of a resource samples file (the contract between the branches of issue 16).
PERF_COLUMNS = ("time", "node", "pid", "role", "cpu_percent", "rss_bytes", "gpu_memory_bytes")

_NVIDIA_SMI_TIMEOUT = 5.0


def node_name() -> str:
    """Return this node's name as the samples and statuses record it (a safe path segment)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "node"


def gpu_memory_by_pid() -> dict[int, int] | None:
    """Return the GPU memory each process uses (bytes), or None when no NVIDIA GPU can be asked."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("nvidia-smi failed: %s", exc)
        return None
    used: dict[int, int] = {}
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and mib.strip().isdigit():
            used[int(pid)] = used.get(int(pid), 0) + int(mib) * 1024 * 1024
    return used


class ResourceMonitor:
    """Append a sample of ``pids()`` and of the node to ``path`` every ``interval`` seconds.

    ``pids`` defaults to this process's direct children (a pool's or a task's workers).
    ``after_sample`` runs after each sample (a task uses it to publish the file now and then).
    ``stop()`` takes a last sample, so even a run shorter than the interval has two.
    """

    def __init__(
        self,
        path: str,
        interval: float,
        pids: Callable[[], Iterable[int]] | None = None,
        after_sample: Callable[[], None] | None = None,
    ) -> None:
        import psutil  # here: the worker side never needs it

        self._psutil = psutil
        self.path, self.interval = path, float(interval)
        self.pids = pids or self._children
        self.after_sample = after_sample
        self.node = node_name()
        self._processes: dict[int, Any] = {}
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._loop, name="parallelrun-resource-monitor", daemon=True)
        psutil.cpu_percent(None)  # the node's first reading counts from here

    def start(self) -> ResourceMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling after one last sample (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10 + _NVIDIA_SMI_TIMEOUT)
        self.sample_now()

    def _loop(self) -> None:
        self.sample_now()
        while not self._stop.wait(self.interval):
            self.sample_now()

    def _children(self) -> list[int]:
        return [p.pid for p in self._psutil.Process().children()]

    def sample_now(self) -> None:
        """Append one sample to the file; log (once) rather than raise when it fails."""
        try:
            rows = self.sample()
            new = not os.path.exists(self.path)
            with open(self.path, "a", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                if new:
                    writer.writerow(PERF_COLUMNS)
                writer.writerows(rows)
            if self.after_sample is not None:
                self.after_sample()
        except Exception:
            if not self._warned:
                self._warned = True
                log.warning("resource sampling failed (no further warnings)", exc_info=True)

    def sample(self) -> list[tuple[Any, ...]]:
        """Return one row per live worker process and one for the node."""
        psutil, now = self._psutil, round(time.time(), 3)
        gpu = gpu_memory_by_pid()
        rows: list[tuple[Any, ...]] = []
        seen = set()
        for pid in self.pids():
            process = self._processes.get(pid)
            try:
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                    process.cpu_percent(None)  # the first reading is a baseline, not a value
                    cpu: Any = ""
                else:
                    cpu = round(process.cpu_percent(None), 1)
                rss = process.memory_info().rss
                if not rss:
                    raise psutil.ZombieProcess(pid)  # exited, not yet reaped by its parent
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._processes.pop(pid, None)
                continue
            seen.add(pid)
            rows.append((now, self.node, pid, "worker", cpu, rss, "" if gpu is None else gpu.get(pid, 0)))
        for gone in set(self._processes) - seen:
            del self._processes[gone]
        node_gpu = "" if gpu is None else sum(gpu.values())
        node_cpu = round(psutil.cpu_percent(None), 1)
        rows.append((now, self.node, "", "node", node_cpu, psutil.virtual_memory().used, node_gpu))
        return rows


def start_monitor(path: str, interval: float, **kwargs: Any) -> ResourceMonitor | None:
    """Start sampling into ``path`` every ``interval`` seconds; None when off (0) or psutil is missing."""
    if not interval or interval <= 0:
        return None
    try:
        return ResourceMonitor(path, interval, **kwargs).start()
    except ImportError as exc:
        log.warning("no resource samples: %s (psutil is a dependency of airflow-parallelrun)", exc)
        return None
