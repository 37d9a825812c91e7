"""What the harness measures besides wall time: memory of processes, outputs' digests, the machine.

The sampler reads ``/proc`` through psutil every ``interval`` seconds in a thread of the harness;
it classifies each process it sees by its command line and keeps the peak RSS per process.
RSS counts shared pages (a forked process's inherited ones too): it is what ``top`` shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import psutil

MB = 1024 * 1024

#: The entry-script worker processes of the operator: any ``python -m airflow_parallelrun...``.
OURS_WORKER = "airflow_parallelrun"
#: An Airflow 3 task process renames itself ``airflow worker -- <task instance id>``; the
#: LocalExecutor's supervising worker is ``airflow worker -- LocalExecutor: <task>``.
AIRFLOW_TASK = re.compile(r"^airflow worker -- ([0-9a-f]{8}-[0-9a-f-]{27})")


def classify_ours(cmdline: list[str]) -> str | None:
    """Tell an entry-script worker (``worker``) or an Airflow task process (``task:<ti id>``) apart."""
    if not cmdline:
        return None
    joined = " ".join(cmdline)
    task = AIRFLOW_TASK.match(joined)
    if task:
        return "task:" + task.group(1)
    if any(arg.startswith(OURS_WORKER) for arg in cmdline[1:3]) or f"-m {OURS_WORKER}" in joined:
        return "worker"
    return None


def classify_ray(cmdline: list[str]) -> str | None:
    """Ray's actors and tasks are named ``ray::<class or function>``."""
    return "worker" if cmdline and cmdline[0].startswith("ray::") else None


@dataclass
class Sampler:
    """Keep the peak RSS of every process that ``classify`` names, sampling every ``interval`` s.

    With ``root``, only that process's descendants are looked at (``classify`` None: all of
    them are ``worker``), and the root's own peak is kept as ``root``.

    With ``member``, only the processes it says yes to are classified at all. It also keeps the
    peak of the *tree*: the sum of the RSS of every process of the job at one
    sweep. With ``root`` the job is the root and all its descendants; without it, the processes
    for which ``member`` says yes (asked once per process, while it settles). ``tree_first`` is
    the sum at the first sweep: what was there before the job did anything (an idle Airflow).
    """

    #: Seconds after its start during which a process's command line is read again each sweep.
    SETTLE_SECONDS: ClassVar[float] = 3.0

    classify: Callable[[list[str]], str | None] | None = None
    root: int | None = None
    interval: float = 0.1
    member: Callable[[psutil.Process], bool] | None = None
    peaks: dict[int, int] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    sweeps: int = 0
    tree_peak: int = 0
    tree_first: int | None = None
    _named: dict[int, tuple[psutil.Process, float, str | None, bool]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _tree(self) -> list[tuple[psutil.Process, str | None, bool]]:
        """Return the root and every descendant: all are in the tree, the classified ones have a kind."""
        if self.root is None:
            return []
        try:
            root = psutil.Process(self.root)
            found: list[tuple[psutil.Process, str | None, bool]] = [(root, "root", True)]
            for child in root.children(recursive=True):
                kind = self.classify(child.cmdline()) if self.classify else "worker"
                found.append((child, kind, True))
            return found
        except psutil.Error:
            return []

    def _processes(self) -> list[tuple[psutil.Process, str | None, bool]]:
        if self.root is not None:
            return self._tree()
        # Every process on the machine, but each one's command line is read only while it may
        # still rename itself (an Airflow task process does, just after its fork): the sampler
        # must not cost the job it measures much CPU.
        found, now, alive = [], time.time(), set()
        for process in psutil.process_iter():
            alive.add(process.pid)
            known = self._named.get(process.pid)
            if known is None or known[0] is not process or now - known[1] < self.SETTLE_SECONDS:
                try:
                    created = process.create_time()
                    member = bool(self.member(process)) if self.member else False
                    # With ``member``, only the job's own processes are classified: another job on
                    # a shared machine may run entry-script workers too.
                    mine = member or self.member is None
                    kind = self.classify(process.cmdline()) if self.classify and mine else None
                except psutil.Error:
                    continue
                known = (process, created, kind, member)
                self._named[process.pid] = known
            if known[2] or known[3]:
                found.append((process, known[2], known[3]))
        for pid in set(self._named) - alive:
            del self._named[pid]
        return found

    def _loop(self) -> None:
        while not self._stop.is_set():
            total = 0
            for process, kind, member in self._processes():
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss
                    total += rss if member else 0
                    if kind:
                        # Always recorded (a zombie reports 0), so kinds and peaks hold the same pids.
                        self.peaks[process.pid] = max(rss, self.peaks.get(process.pid, 0))
                        # A forked task process is an executor's copy before it renames itself.
                        self.kinds[process.pid] = kind
            if self.tree_first is None and total:
                self.tree_first = total
            self.tree_peak = max(self.tree_peak, total)
            self.sweeps += 1
            self._stop.wait(self.interval)

    def peak_mb(self, kind: str) -> float | None:
        """Return the largest peak RSS of one process of ``kind`` (a prefix), in MB."""
        values = [self.peaks.get(pid, 0) for pid, k in self.kinds.items() if k.startswith(kind)]
        return round(max(values) / MB, 1) if values else None

    def count(self, kind: str) -> int:
        """Return how many distinct processes of ``kind`` were seen (short-lived ones may be missed)."""
        return sum(1 for k in self.kinds.values() if k.startswith(kind))

    def tree_mb(self) -> dict[str, float | None]:
        """Return the tree's peak summed RSS and its sum at the first sweep, in MB (None: not sampled)."""
        return {
            "tree_peak_rss_mb": round(self.tree_peak / MB, 1) if self.tree_peak else None,
            "tree_first_rss_mb": round(self.tree_first / MB, 1) if self.tree_first else None,
        }


def digest_tabular(paths: list[Path]) -> dict[str, Any]:
    """Return the rows and a SHA-256 of ``id, proba`` sorted by id, over the given parquet files/folders."""
    import numpy as np
    import pyarrow.parquet as pq

    ids, probas = [], []
    for path in paths:
        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        for f in files:
            table = pq.read_table(f, columns=["id", "proba"])
            ids.append(table.column("id").to_numpy())
            probas.append(table.column("proba").to_numpy())
    if not ids:
        return {"rows": 0, "sha256": None}
    id_array, proba_array = np.concatenate(ids), np.concatenate(probas)
    order = np.argsort(id_array, kind="stable")
    sha = hashlib.sha256()
    sha.update(id_array[order].astype(np.int64).tobytes())
    sha.update(proba_array[order].astype(np.float64).tobytes())
    return {"rows": len(id_array), "sha256": sha.hexdigest()}


def digest_lines(lines: list[str]) -> dict[str, Any]:
    """Return the count and a SHA-256 of the sorted ``"<file name>: <digit>"`` lines."""
    cleaned = sorted(line.strip() for line in lines if line.strip())
    return {"rows": len(cleaned), "sha256": hashlib.sha256("\n".join(cleaned).encode()).hexdigest()}


def lines_of_parquet(folder: Path) -> list[str]:
    import pyarrow.parquet as pq

    lines: list[str] = []
    for f in sorted(folder.rglob("*.parquet")):
        lines.extend(str(v) for v in pq.read_table(f, columns=["line"]).column("line").to_pylist())
    return lines


def run_probe(args: list[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m benchmarks.probe ARGS`` and return its JSON, or ``{"error": ...}``."""
    from benchmarks.workloads import REPO

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.probe", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"probe {args[0]} took over {timeout:g}s"}
    if done.returncode != 0:
        return {"error": f"probe {args[0]} failed ({done.returncode}): {done.stderr.strip()[-1500:]}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def machine() -> dict[str, Any]:
    """Describe the machine and the versions the numbers were taken with."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        from benchmarks.workloads import REPO

        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "versions": {
            name: version(name)
            for name in (
                "apache-airflow",
                "airflow-provider-parallelrun",
                "scikit-learn",
                "pandas",
                "pyarrow",
                "numpy",
                "ray",
            )
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
