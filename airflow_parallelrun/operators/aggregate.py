"""AggregateOperator: count every mini-batch, apply the thresholds, merge the outputs, report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.operators.run_context import (
    OUTPUT_PATH_KEY,
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


class AggregateOperator(BaseOperator):
    """Count every mini-batch, apply the thresholds, merge the outputs, write summary and report.

    It runs whatever happened upstream (trigger rule ``all_done``). Airflow's ``retries`` of this
    task count and merge again from the run's storage; a threshold exceeded fails it without
    retries, as another try would count the same.
    """

    template_fields: Sequence[str] = ("sql_output_conn_id",)
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        partition_task_id: str,
        config: ParallelRunConfig,
        input_conn_id: str | None = None,
        output_conn_id: str | None = None,
        sql_output: SqlTable | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.sql_output = sql_output
        self.sql_output_conn_id = sql_output.conn_id if sql_output is not None else None
        self.partition_task_id = partition_task_id
        self.config = config
        self.input_conn_id = input_conn_id
        self.output_conn_id = output_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_parallelrun.core import steps
        from airflow_parallelrun.core.errors import ParallelRunError, ThresholdExceeded

        output_path = pull_output_path(
            context, self.partition_task_id, self.input_conn_id, self.output_conn_id
        )
        if not output_path:
            raise self._no_partition(context)
        try:
            config = resolved_config(output_path, self.config)
        except ConfigError as exc:
            raise fail(f"this DAG run's rendered values are invalid: {exc}") from None
        try:
            summary = steps.aggregate(
                run_spec(output_path, config, "", (), sql_sink(self.sql_output, self.sql_output_conn_id)),
                run_id=context["run_id"],
                run_key=pull_run_key(context, self.partition_task_id),
            )
        except ThresholdExceeded as exc:
            raise fail(str(exc)) from None
        except ParallelRunError as exc:
            # Retrying would fail the same way: the summary already says failed and why.
            raise fail(str(exc)) from exc
        for asset in self.outlets:
            # The event's extra is what a DAG scheduled on the asset reads of this run.
            context["outlet_events"][asset].extra = asset_event_extra(summary)
        self.log.info(
            "parallel run succeeded: %d of %d mini-batches, %d of %d items; output %s",
            summary["succeeded_mini_batches"],
            summary["total_mini_batches"],
            summary["succeeded_items"],
            summary["total_items"],
            summary["output"],
        )
        return summary

    def _no_partition(self, context: Context) -> Exception:
        """Skip when the partition task was skipped (say, no new files); fail saying why otherwise."""
        state = None
        unreadable = ""
        try:
            states = context["ti"].get_task_states(
                dag_id=context["ti"].dag_id, task_ids=[self.partition_task_id], run_ids=[context["run_id"]]
            )
            state = states.get(context["run_id"], {}).get(self.partition_task_id)
        except Exception as exc:  # an older Airflow, or the API is unreachable: say what is known
            unreadable = f"{type(exc).__name__}: {exc}"
            self.log.warning("cannot read the state of %s: %s", self.partition_task_id, unreadable)
        if unreadable:
            return fail(
                f"the partition task {self.partition_task_id!r} left no output path, so there is nothing "
                f"to aggregate, and its state could not be read ({unreadable}); see the partition task's "
                "log, fix what it says, and clear it"
            )
        if state == "success":
            return fail(
                f"the partition task {self.partition_task_id!r} succeeded but its output path is not in "
                f"XCom (key {OUTPUT_PATH_KEY!r}; were its XComs deleted?); clear the partition task to "
                "partition the input again"
            )
        if state == "skipped":
            return skip(f"the partition task {self.partition_task_id!r} was skipped: nothing ran")
        if state == "upstream_failed":
            return fail(
                f"the partition task {self.partition_task_id!r} did not run because a task before it "
                "failed; see that task's log, fix it, and clear it"
            )
        return fail(
            f"the partition task {self.partition_task_id!r} did not finish (its state is "
            f"{state or 'unknown'}), so there is nothing to aggregate; see its log, fix what it says, "
            "and clear it"
        )


def asset_event_extra(summary: dict[str, Any]) -> dict[str, Any]:
    """Return the metadata of a run's output asset event: counts, the merged output, the run id."""
    keys = (
        "run_id",
        "output",
        "summary",
        "status",
        "total_mini_batches",
        "succeeded_mini_batches",
        "failed_mini_batches",
        "total_items",
        "succeeded_items",
        "failed_items",
    )
    return {key: summary.get(key) for key in keys}
