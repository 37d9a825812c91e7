"""The three steps of a parallel run, called by the Airflow tasks: partition, run, aggregate.

``partition`` is here; the run step is in :mod:`run_step`, the aggregate step in :mod:`aggregate`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from airflow_parallelrun.core.aggregate import aggregate
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.datasets import Dataset
from airflow_parallelrun.core.manifest import RunLayout, write_manifest
from airflow_parallelrun.core.minibatch import LABEL_LIMIT, MiniBatch
from airflow_parallelrun.core.run_step import run_mini_batch, run_mini_batches, start_warm_workers
from airflow_parallelrun.core.storage import Location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """Everything a step needs besides the mini-batch: where, what script, which settings."""

    output_path: str
    config: ParallelRunConfig
    entry_script: str
    arguments: tuple[str, ...] = ()
    # None: the options registered for the output path (from a Connection), if any.
    storage_options: dict[str, Any] | None = None

    def layout(self) -> RunLayout:
        return RunLayout(Location(self.output_path, self.storage_options))


def partition(
    dataset: Dataset, spec: RunSpec, *, resume: bool = False, max_tasks: int | None = None
) -> list[dict[str, Any]]:
    """List and split the input, store the manifest, and return the descriptors to map over.

    Consecutive mini-batches are packed as ``config.mini_batches_per_task`` says, and so that at
    most ``max_tasks`` descriptors come back; a descriptor's ``count`` says how many it holds.
    With ``resume``, an earlier run's results at the same ``output_path`` are kept when its
    input is unchanged (same files, sizes and modification times, same mini-batch size).
    """
    from airflow_parallelrun.core.partition import partition_dataset

    layout = spec.layout()
    size = spec.config.batch_size(tabular=dataset.tabular)
    started = time.perf_counter()
    batches, header = partition_dataset(dataset, size)
    header["resumed"], header["resume_note"] = (
        _resumable(layout, header, len(batches)) if resume else (False, "")
    )
    # A fresh run must not count an earlier run's statuses; a resumed one keeps those of its mini-batches.
    stale = (
        ("errors", "abort.json")
        if header["resumed"]
        else ("status", "parts", "manifest", "errors", "abort.json")
    )
    for name in stale:
        layout.output.remove(layout.state(name))
    write_manifest(layout, batches, header)
    descriptors = pack(batches, spec.config.run_task_count(len(batches), max_tasks))
    log.info(
        "partitioned %d input files into %d mini-batches (%s %s each) for %d tasks in %.2fs%s",
        header["input_files"],
        len(batches),
        size.value,
        size.unit,
        len(descriptors),
        time.perf_counter() - started,
        f"; {header['resume_note']}" if header["resume_note"] else "",
    )
    return descriptors


def _resumable(layout: RunLayout, header: dict[str, Any], total: int) -> tuple[bool, str]:
    """Tell whether an earlier run at this output path may be resumed, and say why or why not."""
    if not layout.output.exists(layout.manifest):
        return False, "resume: no earlier run at this output path; starting clean"
    earlier = layout.output.read_json(layout.manifest)
    for key in ("fingerprint", "mini_batch_size", "kind", "format"):
        if earlier.get(key) != header.get(key):
            what = "the input changed" if key == "fingerprint" else f"{key} changed"
            return False, (
                f"resume: {what} since the earlier run at this output path (files added, removed, resized "
                "or modified); starting clean"
            )
    if earlier.get("total_mini_batches") != total:
        return False, "resume: the mini-batches differ from the earlier run's; starting clean"
    return True, "resume: the input is unchanged; mini-batches that already succeeded are reused"


def pack(batches: list[MiniBatch], tasks: int | None = None) -> list[dict[str, Any]]:
    """Return ``tasks`` descriptors (one per mini-batch by default), each for consecutive ones.

    The packs differ in size by one at most, larger first, so the processes finish together.

    >>> from airflow_parallelrun.core.minibatch import MiniBatch
    >>> mbs = [MiniBatch(index=i, kind="files", files=(f"f{i}",)) for i in range(5)]
    >>> [(d["index"], d["count"]) for d in pack(mbs, 2)]
    [(0, 3), (3, 2)]
    >>> [(d["index"], d["count"]) for d in pack(mbs, 4)]
    [(0, 2), (2, 1), (3, 1), (4, 1)]
    >>> len(pack(mbs))
    5
    """
    if not batches:
        return []
    tasks = min(max(tasks or len(batches), 1), len(batches))
    size, larger = divmod(len(batches), tasks)
    descriptors = []
    start = 0
    for number in range(tasks):
        per_task = size + (1 if number < larger else 0)
        group = batches[start : start + per_task]
        start += per_task
        first, last = group[0], group[-1]
        if len(group) == 1:
            descriptors.append(first.descriptor())
            continue
        label = f"{first.id}..{last.id} ({len(group)} mini-batches) {first.label.split(' ', 1)[1]}"
        descriptors.append(
            {"id": first.id, "index": first.index, "count": len(group), "label": label[:LABEL_LIMIT]}
        )
    return descriptors


__all__ = [
    "RunSpec",
    "aggregate",
    "pack",
    "partition",
    "run_mini_batch",
    "run_mini_batches",
    "start_warm_workers",
]
