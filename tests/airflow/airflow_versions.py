"""Airflow internals the tests reach into that moved between Airflow 3.1 and 3.3: where each one is.

The package itself uses only what every supported Airflow has (``operators/task_sdk.py`` holds
its few shims); the tests also read Airflow's own internals (the DagBag, the DAG serializer, the
triggerer's kwargs encoding), which moved in 3.2. ``make test-compat`` runs the fast tests on 3.1.
"""

from __future__ import annotations

from typing import Any


def dag_bag(**kwargs: Any) -> Any:
    """Return a ``DagBag`` as the dag-processor builds it (``airflow.models.dagbag`` before 3.2)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(**kwargs)


def dag_serialization() -> Any:
    """Return the class that serializes a DAG for the scheduler (``SerializedDAG`` before 3.2)."""
    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization
    return DagSerialization


def fail_exception() -> type[Exception]:
    """Return ``AirflowFailException``: ``airflow.sdk.exceptions`` from 3.2, ``airflow.exceptions`` in 3.1."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]
    return AirflowFailException


def airflow_conf() -> Any:
    """Return Airflow's configuration as a task reads it (``airflow.configuration`` before 3.2)."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1
        from airflow.configuration import conf  # type: ignore[no-redef]
    return conf


def stored_trigger_kwargs(classpath: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return a trigger's kwargs as the triggerer reads them back from the database."""
    try:
        from airflow.serialization.decoders import smart_decode_trigger_kwargs
        from airflow.serialization.encoders import encode_trigger
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import (  # type: ignore[no-redef]
            _encode_trigger as encode_trigger,
        )
        from airflow.serialization.serialized_objects import (
            smart_decode_trigger_kwargs,
        )
    stored = encode_trigger({"classpath": classpath, "kwargs": kwargs})["kwargs"]
    return {k: smart_decode_trigger_kwargs(v) for k, v in stored.items()}


def sdk_has_timetables() -> bool:
    """Tell whether ``airflow.sdk`` has ``CronTriggerTimetable`` (Airflow 3.2 and later)."""
    import airflow.sdk

    return hasattr(airflow.sdk, "CronTriggerTimetable")
