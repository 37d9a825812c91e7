"""Prepare a SQL input in the partition task: check its rendered table or query, read its Connection."""

from __future__ import annotations

import dataclasses
from typing import Any

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sql.connection import rendered_database
from airflow_parallelrun.core.sql.source import SqlDataset
from airflow_parallelrun.operators.task_sdk import fail, mask_secret


def storage_conn_id(dataset: Any) -> str | None:
    """Return the Connection holding the input's storage credentials: none for a SQL input.

    A SQL input's snapshot lives under the run's ``output_path``, read with the output's
    Connection; its ``conn_id`` is a database's, not a storage's.
    """
    return None if isinstance(dataset, SqlDataset) else dataset.conn_id


def resolve_sql_input(dataset: SqlDataset, table: Any, query: Any, conn_id: Any = None) -> SqlDataset:
    """Return the SQL input with its rendered ``table``/``query`` checked and its URL resolved, in memory.

    ``conn_id`` is the rendered ``inputs.conn_id`` (empty: the dataset's ``url``). An invalid
    rendered value or a Connection that cannot be read fails the task without retries. The
    password is registered with the secrets masker, so no log shows it.
    """
    try:
        rendered_id = dataset.conn_id if conn_id is None else conn_id
        chosen, url = rendered_database("SqlDataset", rendered_id, dataset.url)
        rendered = dataclasses.replace(dataset.rendered(table, query), conn_id=chosen, url=url)
    except ConfigError as exc:
        raise fail(
            f"this DAG run's rendered values of the SQL input ({dataset.source}) are invalid: {exc}"
        ) from None
    if rendered.conn_id is None:
        return rendered
    from airflow_parallelrun.hooks.sql import sqlalchemy_url

    try:
        url = sqlalchemy_url(rendered.conn_id)
    except ConfigError as exc:
        raise fail(f"SqlDataset conn_id={rendered.conn_id!r}: {exc}") from None
    except Exception as exc:
        if "NotFound" not in type(exc).__name__:
            raise
        raise fail(
            f"SqlDataset conn_id={rendered.conn_id!r} is not an Airflow Connection ({type(exc).__name__}); "
            "create it (UI, CLI or AIRFLOW_CONN_<ID>) or fix the id"
        ) from None
    if url.password:
        mask_secret(url.password)
    return rendered.with_connection(url)
