"""Publish resource samples files to the run's storage whole, and read them back for the report.

A samples file (``ResourceMonitor``) grows on a node's local disk: a pool's next to its socket
(``<pool dir>/<key>.perf.csv``), a task's own in its scratch folder. The run's storage gets it
as ``_parallelrun/perf/<node>/<key>.csv``, replaced whole in one atomic write at most every
``PUBLISH_EVERY`` seconds and at the end, never appended a row at a time (an object store has
no append, and a row per request would cost more than the sampling). A pool has no
credentials for the run's storage (they live in the task's memory), so the run tasks that
lease its workers publish its file after their mini-batches, and the aggregate task publishes
the files of the run's pools on its node once more when it stops them.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.execution.pool.protocol import PoolUnavailable, pool_dir, short_hash
from airflow_parallelrun.core.execution.resource_monitor import node_name
from airflow_parallelrun.core.storage.concurrent import READS_IN_FLIGHT, map_ahead

if TYPE_CHECKING:
    from airflow_parallelrun.core.storage.manifest import RunLayout

log = logging.getLogger(__name__)

#: Seconds between two publications of one samples file by the tasks of a node, at least (but
#: each task publishes what grew when it ends).
PUBLISH_EVERY = 30.0
#: The most samples files the report reads (a run without warm workers has one per task).
MAX_PERF_FILES = 200
#: The suffix of a pool's samples file in the pool folder.
POOL_PERF_SUFFIX = ".perf.csv"


def perf_path(layout: RunLayout, node: str, key: str) -> str:
    return layout.state("perf", node, f"{key}.csv")


class PerfPublisher:
    """Publish the local samples file ``local`` as ``perf/<this node>/<key>.csv``, when it grew.

    What was last published, and when, is kept next to the file (``<file>.published``), so that
    the many tasks leasing one pool's workers publish its file once per ``every`` seconds between
    them, not once each.
    """

    def __init__(self, layout: RunLayout, local: str, key: str, every: float = PUBLISH_EVERY) -> None:
        self.layout, self.local, self.every = layout, local, every
        self.target = perf_path(layout, node_name(), key)
        self.marker = local + ".published"

    def maybe(self) -> None:
        """Publish if the file grew and no publication of it is younger than ``every`` seconds."""
        if time.time() - self._published()[1] >= self.every:
            self.publish()

    def publish(self) -> None:
        """Publish the file's complete lines if it grew; log, never raise, when it fails."""
        try:
            if not os.path.exists(self.local) or os.path.getsize(self.local) == self._published()[0]:
                return
            with open(self.local, "rb") as f:
                data = f.read()
            # A sampler may be appending right now: publish whole lines only.
            data = data[: data.rfind(b"\n") + 1]
            self.layout.output.write_bytes(self.target, data)
            with open(self.marker, "w") as f:
                f.write(f"{len(data)} {time.time()}")
        except Exception:
            log.warning("could not publish the resource samples %s", self.target, exc_info=True)

    def _published(self) -> tuple[int, float]:
        """Return the size and the time of the last publication (-1 and 0: none)."""
        try:
            with open(self.marker) as f:
                size, when = f.read().split()
            return int(size), float(when)
        except (OSError, ValueError):
            return -1, 0.0


def pool_perf_file(pool_socket: str) -> str:
    """Return the local samples file of the pool listening at ``pool_socket``."""
    return pool_socket[: -len(".sock")] + POOL_PERF_SUFFIX


def publish_node_pools(layout: RunLayout) -> int:
    """Publish the samples files of this node's pools of the run (the aggregate task); return how many."""
    try:
        folder = pool_dir()
    except (OSError, PoolUnavailable):
        return 0
    found = glob.glob(os.path.join(folder, f"{short_hash(layout.output.url)}-*{POOL_PERF_SUFFIX}"))
    for local in found:
        key = os.path.basename(local)[: -len(POOL_PERF_SUFFIX)]
        PerfPublisher(layout, local, key).publish()
    return len(found)


def node_samples(layout: RunLayout) -> tuple[list[dict[str, Any]], int]:
    """Publish the last samples of this node's pools of the run, then read the run's (``read_perf_samples``).

    Run in the aggregate task, once it has stopped its pools.
    """
    publish_node_pools(layout)
    return read_perf_samples(layout)


def read_perf_samples(layout: RunLayout) -> tuple[list[dict[str, Any]], int]:
    """Return the run's resource samples (of ``MAX_PERF_FILES`` files at most) and the count of files."""
    out = layout.output
    ahead = 0 if out.is_local else READS_IN_FLIGHT
    # A remote store: the nodes' folders are listed at once, as their files are read.
    listed = map_ahead(out.listdir, out.listdir(layout.state("perf")), ahead)
    files = [f for in_node in listed for f in in_node if f.endswith(".csv")]

    def read(path: str) -> str | None:
        try:
            return out.read_bytes(path).decode()
        except Exception:
            log.warning("cannot read the resource samples %s", path, exc_info=True)
            return None

    rows: list[dict[str, Any]] = []
    # A remote store: several files read at once (one run task's file each, or more).
    for text in map_ahead(read, files[:MAX_PERF_FILES], ahead):
        if text is not None:
            rows += [_parsed(row) for row in csv.DictReader(io.StringIO(text)) if row.get("role")]
    return rows, len(files)


def _parsed(row: dict[str, str]) -> dict[str, Any]:
    """Return a samples row with its numbers as numbers (None where empty)."""

    def number(text: str | None) -> float | None:
        try:
            return float(text) if text not in (None, "") else None
        except ValueError:
            return None

    return {
        "time": number(row.get("time")),
        "node": row.get("node", ""),
        "pid": row.get("pid", ""),
        "role": row.get("role", ""),
        "cpu_percent": number(row.get("cpu_percent")),
        "rss_bytes": number(row.get("rss_bytes")),
        "gpu_memory_bytes": number(row.get("gpu_memory_bytes")),
    }
