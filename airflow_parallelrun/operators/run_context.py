"""What the run and aggregate tasks take from their partition task: XCom keys, output path, run key, config.

The partition task resolves the run's configuration once (rendered templates, parsed sizes) and
stores it in the manifest header; the run and aggregate tasks read it from there. Environment
values never go there: each task renders its own (see ``rendering.render_environment``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.hooks.storage import use_connections

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.spec import RunSpec
    from airflow_parallelrun.core.sql.sink import SqlSink, SqlTable

OUTPUT_PATH_KEY = "output_path"
INPUT_ROOT_KEY = "input_root"
RUN_KEY_KEY = "run_key"
#: The Connection of the output path (None: none), for readers outside the tasks (the UI view).
OUTPUT_CONN_KEY = "output_conn_id"


def run_spec(
    output_path: str,
    config: ParallelRunConfig,
    entry_script: str,
    arguments: Sequence[str],
    sink: SqlSink | None = None,
) -> RunSpec:
    """Return the core's description of this run."""
    from airflow_parallelrun.core.spec import RunSpec

    return RunSpec(
        output_path=output_path,
        config=config,
        entry_script=entry_script,
        arguments=tuple(str(a) for a in arguments),
        sink=sink,
    )


def sql_sink(output: SqlTable | None, conn_id: str | None = None) -> SqlSink | None:
    """Return the SQL output with its URL, read from its Connection here, in this task's memory only.

    ``conn_id`` is the task's rendering of ``output.conn_id`` (empty: the output's ``url``).
    """
    from airflow_parallelrun.core.errors import SqlOutputError
    from airflow_parallelrun.core.sql.connection import rendered_database
    from airflow_parallelrun.core.sql.sink import bind_sink
    from airflow_parallelrun.hooks.sql import sqlalchemy_url
    from airflow_parallelrun.operators.task_sdk import fail, mask_secret

    if output is None:
        return None
    try:
        rendered_id = output.conn_id if conn_id is None else conn_id
        chosen, url = rendered_database("SqlTable", rendered_id, output.url)
        if (chosen, url) != (output.conn_id, output.url):
            output = dataclasses.replace(output, conn_id=chosen, url=url, key=output.key or None)
    except ConfigError as exc:
        raise fail(f"this DAG run's rendered values are invalid: {exc}") from None
    if output.conn_id is None:
        sink = bind_sink(output)
    else:
        try:
            sink = bind_sink(output, sqlalchemy_url(output.conn_id))
        except Exception as exc:
            raise SqlOutputError(
                f"the SqlTable's Connection {output.conn_id!r} cannot be read: {type(exc).__name__}: {exc}; "
                "define it (Admin > Connections, or AIRFLOW_CONN_<ID>)"
            ) from None
    if sink.url.password:
        mask_secret(str(sink.url.password))
    return sink


def pull_output_path(
    context: Context, partition_task_id: str, input_conn_id: str | None, output_conn_id: str | None
) -> str | None:
    """Return the output path the partition task rendered, with the run's Connections in use."""
    ti = context["ti"]
    output_path = ti.xcom_pull(task_ids=partition_task_id, key=OUTPUT_PATH_KEY)
    root = ti.xcom_pull(task_ids=partition_task_id, key=INPUT_ROOT_KEY)
    use_connections(root, input_conn_id, output_path, output_conn_id)
    return output_path


def pull_run_key(context: Context, partition_task_id: str) -> str | None:
    """Return the run key the partition task minted (None from a partition of an older version)."""
    return context["ti"].xcom_pull(task_ids=partition_task_id, key=RUN_KEY_KEY)


def resolved_config(output_path: str, config: ParallelRunConfig) -> ParallelRunConfig:
    """Return the configuration the partition task resolved for this run, from the manifest header.

    ``config`` is the task's own (from the DAG file): its environment variables, unrendered, go
    with the resolved configuration. A manifest written before the header held the configuration
    gives ``config`` itself, when it has no template to render.
    """
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.errors import ConfigError
    from airflow_parallelrun.core.storage.location import Location
    from airflow_parallelrun.core.storage.manifest import RunLayout

    layout = RunLayout(Location(output_path))
    header = layout.output.read_json(layout.manifest)
    stored = header.get("config") if isinstance(header, dict) else None
    if stored is None:
        if config.templates:
            raise ConfigError(
                f"the manifest at {layout.output.url_of(layout.manifest)} holds no resolved configuration "
                "(a partition of an older version wrote it); clear the partition task to partition again"
            )
        return config
    return ParallelRunConfig.from_header(stored, environment_variables=config.environment_variables)
