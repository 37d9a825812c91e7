"""What report.html and the resource samples cost (docs/report.md): ``python -m benchmarks.report_page_cost``.

1. The report page for 1,000, 10,000 and 100,000 synthetic mini-batches (8 workers, 1% failed,
   2 s each on average, an hour of samples): its size and the time to draw it.
2. One resource sample with 2, 8 and 32 sleeping worker processes: CPU and wall time, bytes.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from typing import Any

from airflow_parallelrun.core.outputs.status import BatchStatus

T0 = 1.8e9  # the epoch second the synthetic run starts at


def synthetic_statuses(count: int, workers: int = 8, seed: int = 7) -> list[BatchStatus]:
    """Return ``count`` mini-batches run back to back by ``workers`` workers; every 100th failed."""
    rng = random.Random(seed)
    free, statuses = [T0] * workers, []
    for i in range(count):
        w = min(range(workers), key=free.__getitem__)
        seconds = rng.expovariate(0.5)
        ok = i % 100 != 42
        statuses.append(
            BatchStatus(
                id=f"mb-{i:06d}",
                index=i,
                status="succeeded" if ok else "failed",
                inputs=[f"/data/in/f{i:06d}.png"],
                tries=1,
                items_total=10,
                items_succeeded=10 if ok else 0,
                items_failed=0 if ok else 10,
                seconds_run=seconds * 0.9,
                error_category="" if ok else "entry_script",
                error_message="" if ok else f"run() raised ValueError: bad {i}",
                started=free[w],
                ended=free[w] + seconds,
                node="node-a",
                worker_pid=1000 + w,
            )
        )
        free[w] += seconds
    return statuses


def synthetic_samples(seconds: float, workers: int = 8, every: float = 10) -> list[dict[str, Any]]:
    """Return resource samples of ``workers`` workers and their node, every ``every`` seconds."""
    return [
        {
            "time": T0 + k * every,
            "node": "node-a",
            "pid": "" if w == workers else str(1000 + w),
            "role": "node" if w == workers else "worker",
            "cpu_percent": 50.0 + w,
            "rss_bytes": 2e8 + w * 1e7,
            "gpu_memory_bytes": None,
        }
        for k in range(int(seconds / every))
        for w in range(workers + 1)
    ]


def page_cost() -> None:
    from airflow_parallelrun.core.outputs.report_html import render_html

    for count in (1_000, 10_000, 100_000):
        statuses = synthetic_statuses(count)
        samples = synthetic_samples(max(s.ended or 0 for s in statuses) - T0)
        began = time.perf_counter()
        page = render_html(statuses, {"status": "failed", "total_mini_batches": count}, samples, 1)
        print(
            f"{count} mini-batches: {len(page.encode()) / 1e3:.0f} kB in {time.perf_counter() - began:.2f} s"
        )


def sample_cost() -> None:
    from airflow_parallelrun.core.execution.resource_monitor import ResourceMonitor

    for count in (2, 8, 32):
        children = [
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(count)
        ]
        try:
            path = os.path.join(tempfile.mkdtemp(prefix="parallelrun-bench-"), "perf.csv")
            monitor, rounds = ResourceMonitor(path, 10), 200
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(rounds):
                monitor.sample_now()
            cpu, wall = (time.process_time() - cpu) / rounds, (time.perf_counter() - wall) / rounds
            print(
                f"{count} workers: {cpu * 1e3:.2f} ms CPU, {wall * 1e3:.2f} ms wall, "
                f"{os.path.getsize(path) / rounds:.0f} bytes per sample"
            )
        finally:
            for child in children:
                child.kill()
                child.wait()


if __name__ == "__main__":
    page_cost()
    sample_cost()
