"""ParallelRunOperator: one call that adds the partition, mapped run and aggregate tasks to a DAG."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import TaskGroup

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.datasets import (
    FileDataset,
    SqlDataset,
    TabularDataset,
    check_partition_keys_fit,
    storage_path,
)
from airflow_parallelrun.core.models.refs import resolve_local_sources
from airflow_parallelrun.core.sql.sink import SqlTable
from airflow_parallelrun.operators.aggregate import AggregateOperator
from airflow_parallelrun.operators.partition import PartitionOperator
from airflow_parallelrun.operators.run import RunMiniBatchOperator
from airflow_parallelrun.operators.sql_input import storage_conn_id

#: Arguments of the run tasks that the task group sets itself: ``run_task_args`` may not name them.
_RUN_TASK_OWN_ARGS = frozenset(
    {
        "task_id",
        "mini_batch",
        "partition_task_id",
        "config",
        "entry_script",
        "arguments",
        "input_conn_id",
        "output_conn_id",
        "sql_output",
        "map_index_template",
    }
)


def max_active_run_tasks(config: ParallelRunConfig) -> int:
    """Return how many run task instances of a DAG run may be in flight at once.

    Without warm workers each runs its own worker: ``node_count * process_count_per_node``.
    With them the node's pool bounds the ``run()`` calls to ``process_count_per_node``, and one
    more task instance per worker may start and wait for it, so that Airflow's start-up of the
    next task instance overlaps the current ``run()`` instead of leaving the worker idle.
    With ``process_count_per_node=None`` this bound takes the CPU count of the machine that
    parses the DAG, while each worker node's pool takes its own CPU count.
    """
    return config.concurrency * (2 if config.warm_workers else 1)


def resolve_entry_script(entry_script: str, dag_folder: str | None) -> str:
    """Return the entry script's absolute path: as given, or relative to the DAG file's folder."""
    path = (
        entry_script if os.path.isabs(entry_script) else os.path.join(dag_folder or os.getcwd(), entry_script)
    )
    path = os.path.normpath(path)
    if not os.path.isfile(path):
        raise ConfigError(
            f"entry_script={entry_script!r} does not exist (looked at {path}); give a path relative to the "
            "DAG file's folder or an absolute path"
        )
    return path


def _with_model_paths(config: ParallelRunConfig, dag_folder: str | None) -> ParallelRunConfig:
    """Return ``config`` with relative local model paths taken from the DAG file's folder, as the script's."""
    if not config.models:
        return config
    return dataclasses.replace(config, models=resolve_local_sources(config.models, dag_folder))


def _check_run_task_args(run_task_args: Any) -> dict[str, Any]:
    """Return ``run_task_args`` as a dict; raise ``ConfigError`` for a non-mapping or an own argument."""
    if run_task_args is None:
        return {}
    if not isinstance(run_task_args, Mapping) or not all(isinstance(k, str) for k in run_task_args):
        raise ConfigError(
            f"run_task_args={run_task_args!r} is not a mapping of argument names to values; give a dict "
            "of operator arguments for the run tasks, e.g. {'queue': 'gpu', 'pool': 'scoring'}"
        )
    if own := sorted(_RUN_TASK_OWN_ARGS.intersection(run_task_args)):
        raise ConfigError(
            f"run_task_args names {', '.join(own)}, which the task group sets itself; drop them "
            "(give config, arguments and output_conn_id to ParallelRunOperator)"
        )
    return dict(run_task_args)


def _check_group_arguments(
    inputs: Any, config: Any, arguments: Any, output: Any = None, resume: bool = False
) -> None:
    """Refuse, at parse time, an input that is not a dataset, a config of another type, bad arguments."""
    if not isinstance(inputs, (FileDataset, TabularDataset, SqlDataset)):
        raise ConfigError(
            f"inputs={inputs!r} is not a dataset; give FileDataset(path=..., pattern=...), "
            "TabularDataset(path=..., format=...) or SqlDataset(conn_id=..., table=... or query=...)"
        )
    if not isinstance(config, ParallelRunConfig):
        raise ConfigError(f"config={config!r} is not a ParallelRunConfig; give ParallelRunConfig(...)")
    check_partition_keys_fit(inputs, config.partition_keys)
    if output is not None and not isinstance(output, SqlTable):
        raise ConfigError(
            f"output={output!r} is not a SqlTable; give SqlTable(conn_id=..., table=...), or leave it out "
            "for the merged file only"
        )
    _check_resume(resume, output)
    if isinstance(arguments, str) or not isinstance(arguments, Sequence):
        raise ConfigError(f"arguments={arguments!r} must be a list of strings, e.g. ['--model_name', 'iris']")


def _check_resume(resume: bool, output: SqlTable | None) -> None:
    """Refuse ``resume=True`` with a table output that ``replace``s: the reused rows would be lost.

    An earlier run's merge moved its mini-batches' rows out of staging; a resumed run reuses those
    mini-batches without staging them again, and its ``replace`` would empty the table of them.
    """
    if resume and output is not None and output.if_exists == "replace":
        raise ConfigError(
            f"resume=True with output=SqlTable(table={output.table!r}, if_exists='replace') would empty "
            "the table of the rows of the mini-batches it reuses; use if_exists='append' or 'upsert' "
            "with resume, or resume=False to score everything again"
        )


def _output_location(output_path: Any, output_conn_id: str | None) -> tuple[Any, str | None]:
    """Return ``output_path`` as a URL and its Connection: an ``ObjectStoragePath`` names its own."""
    return storage_path("ParallelRunOperator", "output_path", output_path, output_conn_id)


def _task_connections(inputs: Any, output_conn_id: str | None, output: SqlTable | None) -> dict[str, Any]:
    """Return what the run and aggregate tasks take of the run's Connections and its SQL output."""
    return {"input_conn_id": storage_conn_id(inputs), "output_conn_id": output_conn_id, "sql_output": output}


class ParallelRunOperator(TaskGroup):
    """Run an entry script over an input in parallel mini-batches, as Azure ML's ParallelRunStep.

    One call adds a task group with three tasks: ``partition`` lists and splits the input,
    ``run`` is mapped once per mini-batch (at most ``node_count * process_count_per_node``
    ``run()`` calls at once), and ``aggregate`` counts, merges and reports whatever happened
    upstream. The group composes with ``>>`` and ``<<`` like a task; ``.output`` is the aggregate's summary.

    ``inputs`` paths, ``output_path`` and ``arguments`` are templated. ``resume=True`` lets a new
    DAG run writing to the same ``output_path`` over unchanged input reuse the mini-batches that
    already succeeded. A run whose ``output_path`` holds the state of another DAG run that is
    still queued or running fails at once in its partition task, changing nothing there: give
    each run its own path (``{{ run_id }}``) to run them side by side. Credentials come from
    Airflow Connections: ``conn_id`` on the dataset for the input, ``output_conn_id`` for the
    output (or an ``ObjectStoragePath`` that names its Connection as the path); they are never
    written to the run's storage, its reports or XCom. A ``SqlDataset`` input is read once, by
    the partition task, into a snapshot under ``output_path``. So are secrets for
    the entry script: ``environment_variables`` values such as ``"{{ conn.my_api.password }}"``
    are rendered inside each task, masked in its log. A rendered value that is invalid (a path,
    ``files``, ``arguments``, a config template, an environment template) fails the task at
    once, without Airflow retries. ``output_asset``
    (an ``Asset``) is emitted by the aggregate task when the run succeeds, with the run's counts,
    merged output URL and run id as the event's extra. ``output`` (a ``SqlTable``) writes what
    ``run()`` returns into a database table as well, exactly once (with ``output_action=
    "summary_only"``, instead of the merged file).
    Above ``[core] max_map_length`` mini-batches, each mapped task instance
    runs a pack of consecutive mini-batches, each still with its own tries, timeout and status.

    Other keyword arguments (``retries``, ``pool``, ``queue``, ``execution_timeout`` ...) go to
    the three tasks; ``run_task_args`` (a dict, e.g. ``{"queue": "gpu", "pool": "scoring"}``)
    go to the mapped run tasks only, over those. ``retries`` means, per task: for ``partition``,
    list and split again; for each ``run`` task instance, run its mini-batches that did not
    succeed again, each with ``run_max_try`` tries again (``run_max_try`` counts the tries of one
    mini-batch within one task try); for ``aggregate``, count and merge again. Invalid rendered
    values and exceeded thresholds fail a task without retries.
    """

    def __init__(
        self,
        *,
        task_id: str,
        inputs: FileDataset | TabularDataset | SqlDataset,
        output_path: str | Any,
        config: ParallelRunConfig,
        arguments: Sequence[str] = (),
        resume: bool = False,
        output_conn_id: str | None = None,
        output: SqlTable | None = None,
        output_asset: Any = None,
        run_task_args: Mapping[str, Any] | None = None,
        tooltip: str = "",
        dag: Any = None,
        **operator_kwargs: Any,
    ) -> None:
        output_path, output_conn_id = _output_location(output_path, output_conn_id)
        _check_group_arguments(inputs, config, arguments, output, resume)
        run_kwargs = {**operator_kwargs, **_check_run_task_args(run_task_args)}
        if "mini_batch_size" not in config.templates:
            # A size in the wrong unit fails at parse time; the tasks get it parsed.
            config = config.for_dataset(tabular=inputs.tabular)
        on_dag: dict[str, Any] = {"dag": dag} if dag is not None else {}
        super().__init__(group_id=task_id, tooltip=tooltip or "parallel run", **on_dag)
        self.config = config = _with_model_paths(config, getattr(self.dag, "folder", None))
        self.entry_script = resolve_entry_script(config.entry_script, getattr(self.dag, "folder", None))
        with self:
            self.partition_task = PartitionOperator(
                task_id="partition",
                inputs=inputs,
                output_path=output_path,
                config=config,
                resume=resume,
                output_conn_id=output_conn_id,
                entry_script=self.entry_script,
                arguments=list(arguments),
                **operator_kwargs,
            )
            connections = _task_connections(inputs, output_conn_id, output)
            run_kwargs.setdefault("max_active_tis_per_dagrun", max_active_run_tasks(config))
            self.run_task = RunMiniBatchOperator.partial(
                task_id="run",
                partition_task_id=self.partition_task.task_id,
                config=config,
                entry_script=self.entry_script,
                arguments=list(arguments),
                map_index_template="{{ task.mini_batch['label'] }}",
                **connections,
                **run_kwargs,
            ).expand(mini_batch=self.partition_task.output)
            self.aggregate_task = AggregateOperator(
                task_id="aggregate",
                partition_task_id=self.partition_task.task_id,
                config=config,
                outlets=[output_asset] if output_asset is not None else [],
                **connections,
                **operator_kwargs,
            )
            self.run_task >> self.aggregate_task

    @property
    def output(self) -> Any:
        """Return the aggregate task's summary as an XComArg."""
        return self.aggregate_task.output

    @classmethod
    def from_azure_yaml(
        cls,
        path: str | os.PathLike[str],
        *,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        job: str | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        **operator_kwargs: Any,
    ) -> ParallelRunOperator:
        """Port an Azure ML v2 parallel job (``type: parallel``, or a pipeline's parallel step) in one call.

        ``inputs``/``outputs`` map the job's input and output names to local paths or fsspec URLs
        (Azure's data assets and datastores cannot be read here), ``input_data`` also to a dataset;
        ``job`` picks the step of a pipeline with several; ``config_overrides`` changes config fields.
        Fields with no effect here are logged; fields that cannot be mapped are refused by name
        (``airflow_parallelrun.operators.azure_yaml``, docs/azure-migration.md).
        """
        from airflow_parallelrun.operators.azure_yaml import map_azure_job

        mapping = map_azure_job(
            path,
            inputs=inputs,
            outputs=outputs,
            job=job,
            config_overrides=config_overrides,
            output_path=operator_kwargs.pop("output_path", None),
        )
        return cls(**mapping.operator_arguments(operator_kwargs))
