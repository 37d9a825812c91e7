"""Airflow version shims and Task SDK calls the operators share: fail, skip, mask, map length, DAG runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

#: DAG run states in which a run still has tasks to run (and may publish to its output path).
ACTIVE_DAG_RUN_STATES = ("queued", "running")


def fail(message: str) -> Exception:
    """Return the exception that fails a task without Airflow retrying it."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]
    return AirflowFailException(message)


def skip(message: str) -> Exception:
    """Return the exception that marks a task skipped."""
    try:
        from airflow.sdk.exceptions import AirflowSkipException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef]
    return AirflowSkipException(message)


def mask_secret(value: str) -> None:
    """Register ``value`` with Airflow's secrets masker, in this task and in its supervisor."""
    try:
        from airflow.sdk.log import mask_secret as _mask
    except ImportError:  # Airflow 3.1
        from airflow.sdk.execution_time.secrets_masker import mask_secret as _mask  # type: ignore[no-redef]
    _mask(value)


def max_map_length() -> int:
    """Return how many task instances Airflow lets one task map to (``[core] max_map_length``)."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1
        from airflow.configuration import conf
    return conf.getint("core", "max_map_length", fallback=1024)


def run_owner(context: Context) -> dict[str, Any]:
    """Return who a run at an output path belongs to: this DAG run and its partition task."""
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "run_id": context["run_id"], "task_id": ti.task_id}


def dag_run_is_active(owner: dict[str, Any]) -> bool:
    """Tell whether the DAG run that owns a run at an output path is still queued or running.

    A DAG run that no longer exists is not active; any other error to read its state propagates,
    and the partition refuses to take the path over (see ``steps.partition``).
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    try:
        state = RuntimeTaskInstance.get_dagrun_state(dag_id=owner["dag_id"], run_id=owner["run_id"])
    except Exception as exc:
        if http_status(exc) == 404:
            return False
        raise
    return str(getattr(state, "value", state)) in ACTIVE_DAG_RUN_STATES


def http_status(exc: Exception) -> int | None:
    """Return the HTTP status of an Execution API error, as a task process or ``dag.test()`` gets it.

    Under a supervisor the task gets an ``AirflowRuntimeError`` whose detail holds the status;
    in ``dag.test()`` the API client's ``ServerResponseError`` (an httpx error) comes through.
    """
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None:
        detail = getattr(getattr(exc, "error", None), "detail", None)
        status = detail.get("status_code") if isinstance(detail, dict) else None
    return int(status) if status is not None else None
