"""The aggregate step: count every mini-batch, apply the bounds, merge, write summary and report.

The counting rules are in ``outputs/counting.py``, the summary's fields in ``outputs/summary.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_parallelrun.core.errors import (
    AggregateError,
    EntryScriptError,
    RunSuperseded,
    ThresholdExceeded,
)
from airflow_parallelrun.core.execution.pool import stop_pools
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.inputs.reading import count_piece_items
from airflow_parallelrun.core.outputs.counting import count_run
from airflow_parallelrun.core.outputs.merge import merge_parts, reopened
from airflow_parallelrun.core.outputs.parts import as_format
from airflow_parallelrun.core.outputs.perf_files import node_samples
from airflow_parallelrun.core.outputs.progress import read_task_records
from airflow_parallelrun.core.outputs.report import failure_message, render_report
from airflow_parallelrun.core.outputs.report_html import write_html_report
from airflow_parallelrun.core.outputs.status import NOT_RUN, SKIPPED, SUCCEEDED, BatchStatus
from airflow_parallelrun.core.outputs.step_times import aggregate_ended, step_times
from airflow_parallelrun.core.outputs.summary import build_summary, failed_summary, first_errors
from airflow_parallelrun.core.outputs.thresholds import exceeded, thresholds_of
from airflow_parallelrun.core.steps.run import abort_reason
from airflow_parallelrun.core.storage.concurrent import PARTS_AHEAD, READS_IN_FLIGHT, map_ahead
from airflow_parallelrun.core.storage.manifest import (
    RunLayout,
    accepted_keys,
    check_run_key,
    iter_mini_batches,
)

if TYPE_CHECKING:
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.spec import RunSpec
    from airflow_parallelrun.core.storage.location import Location

log = logging.getLogger(__name__)


def aggregate(spec: RunSpec, *, run_id: str | None = None, run_key: str | None = None) -> dict[str, Any]:
    """Count every mini-batch, merge the parts in order, write dead letters, summary and report.

    Only records of this run (``run_key``, None: the manifest's own) and of the runs it resumed
    count. Raises ``ThresholdExceeded`` after writing everything when a bound is exceeded;
    ``RunSuperseded``, writing nothing, when another run has taken the output path over; and
    ``AggregateError`` for any other failure, after writing a summary that says failed and why.
    """
    started, layout = time.time(), spec.layout()
    # Every run task is done: free this node's warm workers now rather than when they idle out.
    if spec.config.warm_workers and (stopped := stop_pools(layout.output.url)):
        log.info("stopped %d warm-worker pool(s) of this run on this node", stopped)
    header = check_run_key(layout, run_key)
    run_key = header.get("run_key")
    try:
        return _aggregate(spec, header, run_id, run_key, started)
    except (ThresholdExceeded, RunSuperseded):
        raise
    except Exception as exc:
        log.exception("the aggregate step failed")
        raise _failed(layout, header, (run_id, run_key), exc) from exc


def _failed(
    layout: RunLayout, header: dict[str, Any], run: tuple[str | None, str | None], exc: Exception
) -> AggregateError:
    """Write a summary that says the step failed and why; return the error to raise."""
    error = f"{type(exc).__name__}: {exc}"
    try:
        check_run_key(layout, run[1])
        layout.output.write_json(layout.summary, failed_summary(layout, header, run, error))
        where = f"the summary at {layout.output.url_of(layout.summary)} says failed"
    except Exception as write_error:
        log.exception("cannot write the failed summary either")
        where = f"the summary could not be written either ({type(write_error).__name__}: {write_error})"
    whose = (
        "the entry script's results cannot be merged"
        if isinstance(exc, EntryScriptError)
        else "a framework error, not one of the entry script's"
    )
    return AggregateError(
        f"the aggregate step failed ({whose}): {error}; "
        f"{where}. Every mini-batch's status and part are kept: fix the cause and clear the "
        "aggregate task"
    )


def _aggregate(
    spec: RunSpec, header: dict[str, Any], run_id: str | None, run_key: str | None, started: float
) -> dict[str, Any]:
    layout = spec.layout()
    config = spec.config
    accepted = accepted_keys(header)
    aborted = abort_reason(layout, accepted)
    statuses = list(
        map_ahead(
            lambda mb: _status_of(layout, mb, run_id, aborted, accepted, run_key),
            iter_mini_batches(layout, header),
            0 if layout.output.is_local else READS_IN_FLIGHT,
        )
    )
    skipped = sum(s.status == SKIPPED for s in statuses)
    reasons = exceeded(thresholds_of(config), count_run(statuses))
    if aborted and skipped and not reasons:
        # Inputs were left unprocessed on purpose: whatever the bounds say, the run did not succeed.
        reasons.append(f"the run was aborted ({aborted}); {skipped} mini-batches were skipped")
    with ThreadPoolExecutor(3, thread_name_prefix="parallelrun-records") as background:
        # What needs only the statuses is written while the merge runs, and what the summary and
        # the report read of the run tasks' records is read meanwhile (a remote store's round
        # trips overlap it); an error of the writes or the merge is raised here, the merge's first.
        written = background.submit(_write_records, layout, statuses)
        task_records = background.submit(read_task_records, layout, run_key)
        samples = background.submit(node_samples, layout)
        merged_url = _merge(layout, statuses, config) if config.output_action == "append_row" else None
        written.result()
    sql_output = _write_table(spec, statuses, (run_key, accepted), reasons)
    summary = build_summary(
        statuses,
        layout=layout,
        config=config,
        header=header,
        run=(run_id, run_key),
        reasons=reasons,
        aborted=aborted,
        merged_url=merged_url,
    )
    if sql_output is not None:
        summary["sql_output"] = sql_output
    summary["steps"] = step_times(header, started, task_records.result())
    write_html_report(layout, statuses, summary, samples.result)  # logged, never raised, when it fails
    summary["steps"] = aggregate_ended(summary["steps"], started)  # drawing the report included
    check_run_key(layout, run_key)  # another run took the path over meanwhile: its summary stays
    layout.output.write_json(layout.summary, summary)
    if reasons:
        raise ThresholdExceeded(failure_message(reasons, summary, first_errors(statuses)))
    return summary


def _status_of(
    layout: RunLayout,
    mb: MiniBatch,
    run_id: str | None,
    aborted: str | None,
    accepted: Collection[str | None],
    run_key: str | None,
) -> BatchStatus:
    """Read a mini-batch's status for this run.

    One without a status, with a status of a run this one does not accept, or with a failed
    status from a run it resumed, did not run in this one: skipped when the run was aborted,
    otherwise failed with all its items.
    """
    record = layout.output.read_json_if_exists(layout.status(mb.id))  # one GET, no lookup first
    if record is not None:
        status = BatchStatus.from_dict(record)
        if status.run_key in accepted and (
            status.succeeded
            or (status.run_key == run_key if run_key else run_id is None or status.run_id in (None, run_id))
        ):
            return status
        if status.run_key not in accepted:
            log.warning("%s: ignoring a status of another run (run key %s)", mb.id, status.run_key)
    return _never_ran(mb, run_key, aborted)


def _never_ran(mb: MiniBatch, run_key: str | None, aborted: str | None) -> BatchStatus:
    """Return the status of a mini-batch that did not run in this run: skipped or not run, counted."""
    counted = count_piece_items(mb)
    items, unknown = counted or 0, counted is None
    if aborted:
        return BatchStatus(
            run_key=run_key,
            id=mb.id,
            index=mb.index,
            status=SKIPPED,
            inputs=mb.inputs,
            items_total=items,
            items_unknown=unknown,
            error_category="aborted",
            error_message=f"not run: the run was aborted ({aborted})",
            partition_key_value=mb.partition_key_value,
        )
    return BatchStatus(
        run_key=run_key,
        id=mb.id,
        index=mb.index,
        status=NOT_RUN,
        inputs=mb.inputs,
        items_total=items,
        items_failed=items,
        items_unknown=unknown,
        error_category="not_run",
        error_message="the mini-batch has no status: its task did not run or was killed before finishing",
        partition_key_value=mb.partition_key_value,
    )


def _write_table(
    spec: RunSpec,
    statuses: list[BatchStatus],
    run: tuple[str | None, Collection[str | None]],
    reasons: list[str],
) -> dict[str, Any] | None:
    """Move a succeeded run's staged rows into the SQL sink's table; return what the summary says of it.

    A run that failed writes nothing into the table: its staged rows stay for a resume or for
    its failed tasks, cleared, to complete it.
    """
    from airflow_parallelrun.core.sql.merge import merge_run, outcome

    if spec.sink is None:
        return None
    if reasons:
        return outcome(spec.sink, 0, note="not written: the run failed; its staged rows are kept")
    run_key, accepted = run
    return merge_run(spec.sink, run_key, accepted, [(s.run_key, s.id) for s in statuses if s.succeeded])


def _write_records(layout: RunLayout, statuses: list[BatchStatus]) -> None:
    """Write the dead letters and the per-mini-batch report."""
    _write_dead_letters(layout, statuses)
    layout.output.write_bytes(layout.report, render_report(statuses))


def _write_dead_letters(layout: RunLayout, statuses: list[BatchStatus]) -> None:
    """List every input that was not processed, and write a record for mini-batches nobody ran."""
    out = layout.output
    unprocessed = []
    for s in statuses:
        if s.status in (NOT_RUN, SKIPPED):
            out.write_json(layout.error(s.id), s.dead_letter())
        if s.status != SUCCEEDED:
            unprocessed.extend(s.inputs)
    out.write_bytes(layout.failed_inputs, "".join(f"{i}\n" for i in unprocessed).encode())


def _merge(layout: RunLayout, statuses: list[BatchStatus], config: ParallelRunConfig) -> str | None:
    """Merge the succeeded parts in mini-batch order into the output file; return its URL."""
    out, fmt = layout.output, config.append_row_format

    def sql_part(part: str) -> bool:
        return part.endswith(".parquet") and fmt != "parquet"  # a SQL sink's part, to convert

    def parts() -> Iterator[BinaryIO | None]:
        wanted = [s.part for s in statuses if s.succeeded and s.part]
        if out.is_local:
            for part in wanted:
                # One part in memory at a time, read with the storage retries.
                data = out.read_bytes(part)
                yield io.BytesIO(as_format(data, fmt) if sql_part(part) else data)
            return
        # A remote store (text, csv; parquet: _merge_fetched): the next parts download while this
        # one is merged, each into a local temporary file removed once merged (or with the
        # folder, whatever stops the merge).
        with tempfile.TemporaryDirectory(prefix="parallelrun-parts-") as folder:

            def fetch(numbered: tuple[int, str]) -> tuple[str, str]:
                local = os.path.join(folder, f"{numbered[0]:08d}")
                out.get_file(numbered[1], local)  # with the storage retries
                return numbered[1], local

            # Closed before the folder goes: a merge that stops waits for the downloads in flight.
            with contextlib.closing(map_ahead(fetch, enumerate(wanted), PARTS_AHEAD)) as fetched:
                for part, local in fetched:
                    with open(local, "rb") as f:
                        yield io.BytesIO(as_format(f.read(), fmt)) if sql_part(part) else f
                    os.unlink(local)

    target = out.join(config.output_file_name)
    if fmt == "parquet" and not any(s.succeeded and s.part for s in statuses):
        out.remove(target)
        return None
    with out.writer(target) as f:
        if fmt == "parquet" and not out.is_local:
            _merge_fetched(out, [s.part for s in statuses if s.succeeded and s.part], f)
        else:
            merge_parts(parts(), fmt, f)
    return out.url_of(target)


def _merge_fetched(out: Location, wanted: list[str], f: BinaryIO) -> None:
    """Merge parquet parts of a remote store: download them all, many at once, then merge.

    The merge reads every parquet part twice (the footers first, for the schema), so it needs
    them all at hand anyway: downloaded straight into one folder, READS_IN_FLIGHT at a time, and
    reopened from there, with no copy.
    """
    with tempfile.TemporaryDirectory(prefix="parallelrun-parts-") as folder:

        def fetch(numbered: tuple[int, str]) -> str:
            local = os.path.join(folder, f"{numbered[0]:08d}.parquet")
            out.get_file(numbered[1], local)  # with the storage retries
            return local

        fetched = list(map_ahead(fetch, enumerate(wanted), READS_IN_FLIGHT))
        merge_parts(lambda: reopened(fetched), "parquet", f)
