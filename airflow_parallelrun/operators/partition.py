"""PartitionOperator: render and check the run's values, resolve its configuration, split the input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.sql.source import SqlDataset
from airflow_parallelrun.hooks.storage import input_root, use_connections
from airflow_parallelrun.operators.rendering import (
    check_arguments,
    check_files,
    check_output_path,
    render_environment,
)
from airflow_parallelrun.operators.run_context import (
    INPUT_ROOT_KEY,
    OUTPUT_CONN_KEY,
    OUTPUT_PATH_KEY,
    RUN_KEY_KEY,
    run_spec,
)
from airflow_parallelrun.operators.sql_input import resolve_sql_input, storage_conn_id
from airflow_parallelrun.operators.task_sdk import dag_run_is_active, fail, max_map_length, run_owner

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.inputs.datasets import Dataset
    from airflow_parallelrun.core.spec import RunSpec

#: How the partition's template fields are named to a DAG author.
_FIELD_NAMES = {
    "input_path": "inputs.path",
    "input_files": "inputs.files",
    "input_table": "inputs.table",
    "input_query": "inputs.query",
    "input_sql_conn_id": "inputs.conn_id",
    "config_templates": "config",
}


class PartitionOperator(BaseOperator):
    """List the input, split it into mini-batches, and return their descriptors for mapping.

    It renders the configuration's templates and parses the mini-batch size once, and the
    partition step stores the resolved configuration in the run's manifest header, where the
    run and aggregate tasks read it.
    """

    template_fields: Sequence[str] = (
        "input_path",
        "input_files",
        "input_table",
        "input_query",
        "input_sql_conn_id",
        "output_path",
        "config_templates",
        "arguments",
    )
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        inputs: Dataset,
        output_path: str,
        config: ParallelRunConfig,
        resume: bool = False,
        output_conn_id: str | None = None,
        entry_script: str = "",
        arguments: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The run's entry script and arguments, to warm its workers on this node (none without).
        self.entry_script = entry_script
        self.arguments = list(arguments)
        self.resume = resume
        self.output_conn_id = output_conn_id
        self.inputs = inputs
        self.input_path = inputs.path
        self.input_files = inputs.files
        self.input_table = getattr(inputs, "table", None)
        self.input_query = getattr(inputs, "query", None)
        self.input_sql_conn_id = inputs.conn_id if isinstance(inputs, SqlDataset) else None
        self.output_path = output_path
        self.config = config
        self.config_templates = config.templates
        # Kept unrendered: a rendered path must stay inside the folder its template pins.
        self._templates = {"inputs.path": inputs.path, "output_path": output_path}

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render each templated field; one that cannot render fails the task without retries."""
        import jinja2

        jinja_env = jinja_env or self.get_template_env()
        seen: set[int] = set()
        for name in self.template_fields:
            template = getattr(self, name, None)
            try:
                self._do_render_template_fields(self, [name], context, jinja_env, seen)
            except jinja2.TemplateError as exc:
                # A retry renders the same template with the same context: it cannot succeed.
                raise fail(
                    f"{_FIELD_NAMES.get(name, name)}={template!r} could not be rendered: "
                    f"{type(exc).__name__}: {exc}; fix the template, or set the Param or value it uses"
                ) from None

    def resolve_config(self) -> ParallelRunConfig:
        """Return the configuration of this DAG run: templates rendered, the mini-batch size parsed."""
        config = self.config
        try:
            if self.config_templates:
                config = config.rendered(self.config_templates)
            # A size in the wrong unit for the dataset fails here, once rendered.
            config = config.for_dataset(tabular=self.inputs.tabular)
        except ConfigError as exc:
            raise fail(f"this DAG run's parameters make an invalid ParallelRunConfig: {exc}") from None
        if self.config_templates:
            self.log.info("configuration of this run: %s", self.config_templates)
        return config

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_parallelrun.core.inputs.paths import check_path

        config = self.resolve_config()
        try:
            # Each is a rendered value: a retry renders it again the same, so fail at once.
            output_path = check_path(
                "output_path", check_output_path(self.output_path), self._templates["output_path"]
            )
            if self.input_path is not None:
                check_path("inputs.path", str(self.input_path), self._templates["inputs.path"])
            arguments = check_arguments(self.arguments)
            files = check_files(self.input_files, self.input_path)
        except ConfigError as exc:
            raise fail(f"this DAG run's rendered values are invalid: {exc}") from None
        config = render_environment(self, context, config)
        dataset, root = self._dataset(files)
        use_connections(root, storage_conn_id(self.inputs), output_path, self.output_conn_id)
        spec = run_spec(output_path, config, self.entry_script, arguments)
        run_key, descriptors = self._partition(context, dataset, spec)
        ti = context["ti"]
        ti.xcom_push(key=OUTPUT_PATH_KEY, value=output_path)
        ti.xcom_push(key=RUN_KEY_KEY, value=run_key)
        ti.xcom_push(key=INPUT_ROOT_KEY, value=root)
        ti.xcom_push(key=OUTPUT_CONN_KEY, value=self.output_conn_id)
        return descriptors

    def _dataset(self, files: Any) -> tuple[Dataset, str | None]:
        """Return the rendered input, and the URL prefix its storage Connection applies to (if any)."""
        if isinstance(self.inputs, SqlDataset):
            return (
                resolve_sql_input(self.inputs, self.input_table, self.input_query, self.input_sql_conn_id),
                None,
            )
        dataset = self.inputs.with_source(self.input_path, files)
        return dataset, input_root(dataset.path, dataset.files)

    def _partition(
        self, context: Context, dataset: Dataset, spec: RunSpec
    ) -> tuple[str, list[dict[str, Any]]]:
        """Run the partition step under a new run key, this node's warm workers starting meanwhile."""
        from airflow_parallelrun.core import steps
        from airflow_parallelrun.core.errors import OutputPathInUse, SqlSourceError
        from airflow_parallelrun.core.execution.warm_start import WarmStart

        run_key = steps.new_run_key()
        # Before the listing: the workers' imports and init() are what the first run task waits for.
        warm = WarmStart(spec, run_key)
        try:
            descriptors = steps.partition(
                dataset,
                spec,
                resume=self.resume,
                max_tasks=max_map_length(),
                run_key=run_key,
                owner=run_owner(context),
                is_active=dag_run_is_active,
            )
        except OutputPathInUse as exc:
            raise fail(str(exc)) from exc
        except ConfigError as exc:
            raise fail(f"this run's configuration is invalid: {exc}") from None
        except SqlSourceError as exc:
            # The same read fails the same way on a retry, and queries the database again.
            raise fail(f"the SQL input could not be read: {exc}") from None
        if warming := warm.finish(len(descriptors)):
            self.log.info(
                "starting %d warm worker(s) on this node while the run tasks are scheduled", warming
            )
        return run_key, descriptors
