"""The three steps of a parallel run, called by the Airflow tasks: partition, run, aggregate."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.datasets import Dataset
from airflow_parallelrun.core.errors import EntryScriptLoadError, ThresholdExceeded
from airflow_parallelrun.core.manifest import (
    RunLayout,
    iter_mini_batches,
    read_manifest_header,
    read_mini_batch,
    write_manifest,
)
from airflow_parallelrun.core.minibatch import MiniBatch, mini_batch_id
from airflow_parallelrun.core.output import PART_EXTENSIONS, merge_parts
from airflow_parallelrun.core.reading import stage_mini_batch
from airflow_parallelrun.core.report import failure_message, render_report
from airflow_parallelrun.core.runner import TryResult, WorkerProcess, WorkerSettings
from airflow_parallelrun.core.status import FAILED, NOT_RUN, SUCCEEDED, BatchStatus, count_items
from airflow_parallelrun.core.storage import Location
from airflow_parallelrun.core.thresholds import (
    AllowedFailedCount,
    AllowedFailedPercent,
    ErrorThreshold,
    RunCounts,
    exceeded,
)

log = logging.getLogger(__name__)

FIRST_ERRORS = 5


@dataclass(frozen=True)
class RunSpec:
    """Everything a step needs besides the mini-batch: where, what script, which settings."""

    output_path: str
    config: ParallelRunConfig
    entry_script: str
    arguments: tuple[str, ...] = ()
    storage_options: dict[str, Any] = field(default_factory=dict)

    def layout(self) -> RunLayout:
        return RunLayout(Location(self.output_path, self.storage_options))


def partition(dataset: Dataset, spec: RunSpec) -> list[dict[str, Any]]:
    """List and split the input, store the manifest, and return one small descriptor per mini-batch."""
    from airflow_parallelrun.core.partition import partition_dataset

    layout = spec.layout()
    size = spec.config.batch_size(tabular=dataset.tabular)
    started = time.perf_counter()
    batches, header = partition_dataset(dataset, size)
    # A fresh partition starts a fresh run: statuses and parts of an earlier one would be wrong.
    for folder in ("status", "parts", "manifest"):
        layout.output.remove(layout.state(folder))
    write_manifest(layout, batches, header)
    log.info(
        "partitioned %d input files into %d mini-batches (%s %s each) in %.2fs",
        header["input_files"],
        len(batches),
        size.value,
        size.unit,
        time.perf_counter() - started,
    )
    return [mb.descriptor() for mb in batches]


@dataclass
class _Scratch:
    root: str

    def folder(self, *parts: str) -> str:
        path = os.path.join(self.root, *parts)
        os.makedirs(path, exist_ok=True)
        return path


@contextlib.contextmanager
def _scratch() -> Iterator[_Scratch]:
    root = tempfile.mkdtemp(prefix="parallelrun-")
    try:
        yield _Scratch(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _user_dirs(spec: RunSpec, scratch: _Scratch) -> tuple[str, str, bool]:
    """Return the output and log folders the entry script sees, and whether to upload them after."""
    out = spec.layout().output
    if out.is_local:
        return out.path, out.join("_parallelrun", "logs", "user"), False
    return scratch.folder("output"), scratch.folder("output", "_parallelrun", "logs", "user"), True


def run_mini_batch(index: int, spec: RunSpec) -> BatchStatus:
    """Run one mini-batch with up to ``run_max_try`` tries, publish its part and its status.

    A mini-batch whose status already says it succeeded is not run again. The part is published
    before the status, each in one atomic step, so a status that says succeeded always has its
    part, and a retry replaces a part rather than adding a copy.
    """
    layout = spec.layout()
    mb_id = mini_batch_id(index)
    if layout.output.exists(layout.status(mb_id)):
        previous = BatchStatus.from_dict(layout.output.read_json(layout.status(mb_id)))
        if previous.succeeded:
            log.info("%s already succeeded in an earlier try; reusing its output", mb_id)
            return previous
    mb = read_mini_batch(layout, index)
    config = spec.config
    started = time.perf_counter()
    with _scratch() as scratch:
        output_dir, log_dir, upload = _user_dirs(spec, scratch)
        settings = WorkerSettings(
            entry_script=spec.entry_script,
            arguments=spec.arguments,
            environment_variables=dict(config.environment_variables),
            logging_level=config.logging_level,
            output_dir=output_dir,
            log_dir=log_dir,
            working_dir=scratch.folder("work"),
        )
        local_mb = stage_mini_batch(mb, scratch.folder("input"))
        ext = PART_EXTENSIONS[config.append_row_format]
        part_local = (
            os.path.join(scratch.root, f"{mb_id}.{ext}") if config.output_action == "append_row" else None
        )
        result, tries = _run_with_tries(local_mb, settings, part_local, spec)
        total, succeeded, failed = count_items(
            result.items if result.items is not None else mb.items, result.returned if result.ok else 0
        )
        if not result.ok:
            total = result.items if result.items is not None else (mb.items if mb.items is not None else 1)
            succeeded, failed = 0, total
        status = BatchStatus(
            id=mb_id,
            index=index,
            status=SUCCEEDED if result.ok else FAILED,
            inputs=mb.inputs,
            tries=tries,
            items_total=total,
            items_succeeded=succeeded,
            items_failed=failed,
            items_returned=result.returned if result.ok else 0,
            seconds_run=round(result.run_seconds, 6),
            error_category=result.category,
            error_message=result.message,
            error_traceback=result.traceback,
        )
        if result.ok and result.items is not None and result.returned < result.items:
            status.error_category = "shortfall"
            status.error_message = (
                f"run() returned {result.returned} results for {result.items} items; "
                f"{result.items - result.returned} items count as failed"
            )
        if result.ok and part_local is not None:
            status.part = layout.part(mb_id, ext)
            layout.output.put_file(part_local, status.part)
        if upload:
            _upload_tree(output_dir, layout.output)
        status.seconds_total = round(time.perf_counter() - started, 6)
        layout.output.write_json(layout.status(mb_id), status.to_dict())
    return status


def _upload_tree(local_root: str, output: Location) -> None:
    for folder, _, names in os.walk(local_root):
        for name in names:
            local = os.path.join(folder, name)
            output.put_file(local, output.join(os.path.relpath(local, local_root).replace(os.sep, "/")))


def _run_with_tries(
    mb: MiniBatch, settings: WorkerSettings, part_local: str | None, spec: RunSpec
) -> tuple[TryResult, int]:
    """Try a mini-batch up to ``run_max_try`` times; a fresh worker replaces one that was killed."""
    config = spec.config
    worker: WorkerProcess | None = None
    result = TryResult(ok=False, category="not_run", message="not tried")
    tries = 0
    try:
        for tries in range(1, config.run_max_try + 1):
            if worker is None or not worker.alive():
                worker = WorkerProcess(settings)
                try:
                    worker.start()
                except EntryScriptLoadError as exc:
                    # A script that cannot load fails the same way on every try.
                    return TryResult(
                        ok=False,
                        items=mb.items,
                        category=exc.category,
                        message=str(exc),
                        traceback=exc.traceback,
                    ), tries
            result = worker.run(mb, part_local, config.append_row_format, config.run_invocation_timeout)
            if result.ok or result.category == "input":
                break
            log.warning(
                "%s try %d of %d failed: [%s] %s",
                mb.id,
                tries,
                config.run_max_try,
                result.category,
                result.message,
            )
            if result.traceback:
                log.warning("%s", result.traceback)
    finally:
        if worker is not None:
            shutdown = worker.shutdown()
            if shutdown is not None and not shutdown.ok:
                log.warning("shutdown() failed: %s\n%s", shutdown.message, shutdown.traceback)
    return result, tries


def aggregate(spec: RunSpec) -> dict[str, Any]:
    """Count every mini-batch, merge the parts in order, write the summary and the report.

    Raises ``ThresholdExceeded`` after writing everything when a bound is exceeded.
    """
    layout = spec.layout()
    out = layout.output
    config = spec.config
    header = read_manifest_header(layout)
    statuses = [_status_of(layout, mb) for mb in iter_mini_batches(layout, header)]
    counts = RunCounts(
        total_mini_batches=len(statuses),
        failed_mini_batches=sum(not s.succeeded for s in statuses),
        total_items=sum(s.items_total for s in statuses),
        failed_items=sum(s.items_failed for s in statuses),
    )
    reasons = exceeded(
        [
            ErrorThreshold(config.error_threshold),
            AllowedFailedCount(config.allowed_failed_count),
            AllowedFailedPercent(config.allowed_failed_percent),
        ],
        counts,
    )
    merged_url = None
    if config.output_action == "append_row":
        merged_url = _merge(layout, statuses, config)
    out.write_bytes(layout.report, render_report(statuses))
    summary: dict[str, Any] = {
        "status": "failed" if reasons else "succeeded",
        "total_mini_batches": counts.total_mini_batches,
        "succeeded_mini_batches": counts.total_mini_batches - counts.failed_mini_batches,
        "failed_mini_batches": counts.failed_mini_batches,
        "total_items": counts.total_items,
        "succeeded_items": sum(s.items_succeeded for s in statuses),
        "failed_items": counts.failed_items,
        "returned_items": sum(s.items_returned for s in statuses),
        "output": merged_url,
        "output_action": config.output_action,
        "thresholds": config.thresholds(),
        "thresholds_exceeded": reasons,
        "input": header.get("input"),
        "input_files": header.get("input_files"),
        "refused_inputs": header.get("refused_inputs", []),
        "mini_batch_size": header.get("mini_batch_size"),
        "run_seconds": round(sum(s.seconds_run for s in statuses), 3),
        "report": out.url_of(layout.report),
        "first_errors": [
            {"id": s.id, "inputs": s.inputs, "category": s.error_category, "message": s.error_message}
            for s in statuses
            if not s.succeeded
        ][:FIRST_ERRORS],
    }
    out.write_json(layout.summary, summary)
    if reasons:
        first = [s for s in statuses if not s.succeeded][:FIRST_ERRORS]
        raise ThresholdExceeded(failure_message(reasons, summary, first))
    return summary


def _status_of(layout: RunLayout, mb: MiniBatch) -> BatchStatus:
    """Read a mini-batch's status; one without a status failed with all its items."""
    path = layout.status(mb.id)
    if layout.output.exists(path):
        return BatchStatus.from_dict(layout.output.read_json(path))
    items = mb.items if mb.items is not None else 1
    return BatchStatus(
        id=mb.id,
        index=mb.index,
        status=NOT_RUN,
        inputs=mb.inputs,
        items_total=items,
        items_failed=items,
        error_category="not_run",
        error_message="the mini-batch has no status: its task did not run or was killed before finishing",
    )


def _merge(layout: RunLayout, statuses: list[BatchStatus], config: ParallelRunConfig) -> str | None:
    """Merge the succeeded parts in mini-batch order into the output file; return its URL."""
    out = layout.output

    def parts() -> Iterator[BinaryIO | None]:
        for s in statuses:
            if s.succeeded and s.part:
                with out.fs.open(s.part, "rb") as f:
                    yield f

    target = out.join(config.output_file_name)
    if config.append_row_format == "parquet" and not any(s.succeeded and s.part for s in statuses):
        out.remove(target)
        return None
    with out.writer(target) as f:
        merge_parts(parts(), config.append_row_format, f)
    return out.url_of(target)


__all__ = ["FAILED", "RunSpec", "aggregate", "partition", "run_mini_batch"]
