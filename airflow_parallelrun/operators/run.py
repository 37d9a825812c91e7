"""RunMiniBatchOperator: run a pack of mini-batches through the entry script; mapped by the task group."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.operators.rendering import check_arguments, render_environment
from airflow_parallelrun.operators.run_context import (
    pull_output_path,
    pull_run_key,
    resolved_config,
    run_spec,
    sql_sink,
)
from airflow_parallelrun.operators.task_sdk import fail, skip

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.sql.sink import SqlTable


class RunMiniBatchOperator(BaseOperator):
    """Run one mini-batch (or a pack of consecutive ones) through the entry script.

    Each mini-batch gets ``run_max_try`` tries inside the task, with its own timeout; Airflow's
    ``retries`` of this task run the mini-batches that did not succeed again, each with as many
    tries again (a cleared or retried task instance runs even after the run aborted).
    """

    template_fields: Sequence[str] = ("arguments", "sql_output_conn_id")
    ui_color = "#fef7e0"

    def __init__(
        self,
        *,
        mini_batch: dict[str, Any],
        partition_task_id: str,
        config: ParallelRunConfig,
        entry_script: str,
        arguments: Sequence[str] = (),
        input_conn_id: str | None = None,
        output_conn_id: str | None = None,
        sql_output: SqlTable | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sql_output = sql_output
        self.sql_output_conn_id = sql_output.conn_id if sql_output is not None else None
        self.mini_batch = mini_batch
        self.partition_task_id = partition_task_id
        self.input_conn_id = input_conn_id
        self.output_conn_id = output_conn_id
        self.config = config
        self.entry_script = entry_script
        self.arguments = list(arguments)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_parallelrun.core import steps
        from airflow_parallelrun.core.errors import RunSuperseded
        from airflow_parallelrun.core.outputs.progress import task_key

        output_path = str(
            pull_output_path(context, self.partition_task_id, self.input_conn_id, self.output_conn_id)
        )
        try:
            config = resolved_config(output_path, self.config)
            arguments = check_arguments(self.arguments)
        except ConfigError as exc:
            raise fail(f"this DAG run's rendered values are invalid: {exc}") from None
        spec = run_spec(
            output_path,
            render_environment(self, context, config),
            self.entry_script,
            arguments,
            sql_sink(self.sql_output, self.sql_output_conn_id),
        )
        first, count = int(self.mini_batch["index"]), int(self.mini_batch.get("count", 1))
        # A first try honours an abort; a cleared or retried task instance runs whatever happened.
        try:
            statuses = steps.run_mini_batches(
                range(first, first + count),
                spec,
                run_id=context["run_id"],
                run_key=pull_run_key(context, self.partition_task_id),
                honour_abort=context["ti"].try_number <= 1,
                task_try=context["ti"].try_number,
                task_key=task_key(max(context["ti"].map_index or 0, 0)),
            )
        except RunSuperseded as exc:
            raise fail(str(exc)) from exc
        return self._outcome(statuses)

    def _outcome(self, statuses: list[Any]) -> dict[str, Any]:
        """Log each mini-batch's status; fail or skip the task as they say, or return their counts."""
        from airflow_parallelrun.core.outputs.status import SKIPPED

        for status in statuses:
            self.log.info(
                "%s %s: %d items, %d succeeded, %d failed, %d tries, run() %.2fs",
                status.id,
                status.status,
                status.items_total,
                status.items_succeeded,
                status.items_failed,
                status.tries,
                status.seconds_run,
            )
        failed = [s for s in statuses if not s.succeeded and s.status != SKIPPED]
        if failed:
            raise fail("\n".join(_failure_line(s) for s in failed))
        if all(s.status == SKIPPED for s in statuses):
            raise skip(f"skipped: {statuses[0].error_message}")
        return {
            "ids": [s.id for s in statuses],
            "items_succeeded": sum(s.items_succeeded for s in statuses),
            "items_failed": sum(s.items_failed for s in statuses),
        }

    def on_kill(self) -> None:
        """Kill the entry-script worker with the task: Airflow sends SIGTERM, then SIGKILL."""
        from airflow_parallelrun.core.execution.runner import kill_live_workers

        if killed := kill_live_workers():
            self.log.warning("killed %d entry-script worker process(es) with the task", killed)


def _failure_line(status: Any) -> str:
    inputs = "; ".join(status.inputs)[:300]
    detail = f"\n{status.error_traceback}" if status.error_traceback else ""
    return (
        f"mini-batch {status.id} failed after {status.tries} tries ({inputs}): "
        f"[{status.error_category}] {status.error_message}{detail}"
    )
