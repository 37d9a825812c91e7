"""Find the parallel runs of a DAG run and read their records, as the aggregate reads them.

Runs in the api-server. Each ``ParallelRunOperator`` group of a DAG run is found by the XComs
its partition task pushed (its rendered ``output_path``, run key and output Connection); its
storage is reached through that Connection with the hook the tasks use, in this request's memory
only (never the process-wide registry, which other requests share).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from airflow_parallelrun.operators.run_context import OUTPUT_CONN_KEY, OUTPUT_PATH_KEY, RUN_KEY_KEY

log = logging.getLogger(__name__)

#: The partition task's id in its group: ``<group_id>.partition``.
PARTITION_SUFFIX = ".partition"


@dataclass(frozen=True)
class ParallelRunRef:
    """One ``ParallelRunOperator`` group of a DAG run, as its partition task left it in XCom."""

    group_id: str
    output_path: str
    run_key: str | None = None
    output_conn_id: str | None = None


def dag_run_state(dag_id: str, run_id: str) -> str | None:
    """Return the state of a DAG run (``running``, ``success`` ...), or None when there is no such run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        found = session.execute(
            select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).first()
    return None if found is None else str(found.state)


def find_parallel_runs(dag_id: str, run_id: str) -> list[ParallelRunRef]:
    """Return the parallel runs of a DAG run whose partition task has pushed its output path, by group id."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    keys = (OUTPUT_PATH_KEY, RUN_KEY_KEY, OUTPUT_CONN_KEY)
    query = select(XComModel.task_id, XComModel.key, XComModel.value).where(
        XComModel.dag_id == dag_id,
        XComModel.run_id == run_id,
        XComModel.map_index == -1,
        XComModel.key.in_(keys),
        XComModel.task_id.endswith(PARTITION_SUFFIX),
    )
    found: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        for row in session.execute(query):
            found.setdefault(row.task_id, {})[row.key] = XComModel.deserialize_value(row)
    return [
        ParallelRunRef(
            group_id=task_id[: -len(PARTITION_SUFFIX)],
            output_path=str(values[OUTPUT_PATH_KEY]),
            run_key=values.get(RUN_KEY_KEY),
            output_conn_id=values.get(OUTPUT_CONN_KEY),
        )
        for task_id, values in sorted(found.items())
        if values.get(OUTPUT_PATH_KEY)
    ]


def run_layout(ref: ParallelRunRef) -> Any:
    """Return the ``RunLayout`` of a parallel run, its storage built from its output Connection."""
    from airflow_parallelrun.core.storage.location import Location
    from airflow_parallelrun.core.storage.manifest import RunLayout

    storage = None
    if ref.output_conn_id:
        from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

        storage = ParallelRunStorageHook(ref.output_conn_id).filesystem(ref.output_path)
    return RunLayout(Location(ref.output_path, storage))


def describe_run(ref: ParallelRunRef) -> dict[str, Any]:
    """Return what the view shows of one parallel run: its progress, and its summary once written.

    ``state`` is ``partitioning`` (no manifest yet), ``running``, ``finished`` (a summary of this
    run exists) or ``unreadable`` (the storage failed; ``error`` says how).
    """
    from airflow_parallelrun.core.errors import ParallelRunError
    from airflow_parallelrun.core.outputs.progress import read_progress

    shown: dict[str, Any] = {"group_id": ref.group_id, "output_path": ref.output_path}
    try:
        layout = run_layout(ref)
        progress = read_progress(layout)
    except ParallelRunError:
        return {**shown, "state": "partitioning"}
    except Exception as exc:  # a storage or Connection error: say it in the view, keep the others
        log.warning("cannot read the parallel run at %s: %s", ref.output_path, exc)
        return {**shown, "state": "unreadable", "error": f"{type(exc).__name__}: {exc}"}
    shown["progress"] = progress.as_dict()
    summary = read_summary(layout, ref.run_key) if progress.finished else None
    shown["state"] = "finished" if summary is not None else "running"
    shown["summary"] = summary
    shown["report_html"] = summary is not None and layout.output.exists(layout.report_html)
    return shown


def read_summary(layout: Any, run_key: str | None) -> dict[str, Any] | None:
    """Return the run's ``summary.json`` when it is this run's (``run_key``), else None."""
    try:
        summary = dict(layout.output.read_json(layout.summary))
    except FileNotFoundError:
        return None
    if run_key and summary.get("run_key") not in (None, run_key):
        return None
    return summary


def read_report_html(ref: ParallelRunRef) -> bytes | None:
    """Return the run's ``report.html``, or None when the aggregate has not written one."""
    layout = run_layout(ref)
    try:
        return layout.output.read_bytes(layout.report_html)
    except FileNotFoundError:
        return None
