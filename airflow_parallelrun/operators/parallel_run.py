"""ParallelRunOperator: one call that adds the partition, mapped run and aggregate tasks to a DAG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, TaskGroup

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.datasets import Dataset, FileDataset, TabularDataset, files_from_rendered

if TYPE_CHECKING:
    from airflow.sdk import Context

OUTPUT_PATH_KEY = "output_path"
INPUT_ROOT_KEY = "input_root"
CONFIG_KEY = "config"
RUN_KEY_KEY = "run_key"
#: DAG run states in which a run still has tasks to run (and may publish to its output path).
ACTIVE_DAG_RUN_STATES = ("queued", "running")


def storage_options_from_connection(conn_id: str) -> dict[str, Any]:
    """Turn an Airflow Connection into fsspec storage options, held in this process's memory only.

    The Connection's extra ``storage_options`` (a JSON object) goes to fsspec as it is; its login
    and password fill ``key`` and ``secret`` (s3fs's names) unless the extra names other
    options in ``login_option`` and ``password_option``.
    """
    from airflow.sdk import BaseHook

    return connection_storage_options(BaseHook.get_connection(conn_id))


def connection_storage_options(conn: Any) -> dict[str, Any]:
    """Turn a fetched Connection into fsspec storage options, as ``storage_options_from_connection``."""
    extra = conn.extra_dejson
    options = dict(extra.get("storage_options") or {})
    if conn.login:
        options.setdefault(extra.get("login_option", "key"), conn.login)
    if conn.password:
        options.setdefault(extra.get("password_option", "secret"), conn.password)
    return options


def input_root(path: str | None, files: Any) -> str:
    """Return the URL prefix the input's credentials apply to: its folder, or its files' protocol."""
    if path:
        return str(path)
    first = next(iter(files or []), "")
    return str(first).split("://", 1)[0] + ":/" if "://" in str(first) else "/"


def use_connections(
    root: str | None, input_conn_id: str | None, output_path: str | None, output_conn_id: str | None
) -> None:
    """Register the Connections' storage options for the input and output of this task's run."""
    from airflow_parallelrun.core.storage.location import set_storage_options

    if input_conn_id and root:
        set_storage_options(root, storage_options_from_connection(input_conn_id))
    if output_conn_id and output_path:
        set_storage_options(output_path, storage_options_from_connection(output_conn_id))


def _fail(message: str) -> Exception:
    """Return the exception that fails a task without Airflow retrying it."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]
    return AirflowFailException(message)


def _mask_secret(value: str) -> None:
    """Register ``value`` with Airflow's secrets masker, in this task and in its supervisor."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # Airflow 3.1
        from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]
    mask_secret(value)


def _render_error(exc: Exception) -> str:
    """Describe a failed rendering without echoing a value it may have read (a secret)."""
    import jinja2

    if isinstance(exc, jinja2.TemplateError) or "NotFound" in type(exc).__name__:
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} (its message is withheld: it may hold the value read)"


def render_environment(task: BaseOperator, context: Context, config: ParallelRunConfig) -> ParallelRunConfig:
    """Return ``config`` with its templated environment values rendered for this task, masked.

    Rendered here and not as template fields: Airflow stores a task's rendered template fields
    in its metadata database, and these are meant to hold secrets (``"{{ conn.x.password }}"``).
    Each value is registered with the secrets masker, so what the entry script prints of it is
    masked in the task log; it never goes to XCom, to the run's storage or to a log.
    """
    templates = config.environment_templates
    if not templates:
        return config
    jinja_env = task.get_template_env()
    values: dict[str, str] = {}
    for name, template in templates.items():
        try:
            value = task.render_template(template, context, jinja_env)
        except Exception as exc:
            raise _fail(
                f"environment_variables[{name!r}]={template!r} could not be rendered: {_render_error(exc)}; "
                "check that the Connection or Variable it names exists and the template's spelling, "
                "e.g. '{{ conn.my_api.password }}' or '{{ var.value.my_api_key }}'"
            ) from None
        text = "" if value is None else str(value)
        if text:
            _mask_secret(text)
        values[name] = text
    return config.with_environment(values)


def _check_arguments(arguments: Any) -> list[str]:
    """Return rendered ``arguments`` as text; raise ``ConfigError`` for a value that is not text."""
    if isinstance(arguments, str) or not isinstance(arguments, Sequence):
        raise ConfigError(
            f"arguments={arguments!r} rendered to a {type(arguments).__name__}, not a list; give a list "
            "of strings, e.g. ['--model_name', '{{ params.model }}']"
        )
    for i, argument in enumerate(arguments):
        if not isinstance(argument, (str, int, float)):
            raise ConfigError(
                f"arguments[{i}]={argument!r} rendered to a {type(argument).__name__}, not text; give a "
                "string, a number, or a template rendering one (check the Param it uses is set)"
            )
    return [str(a) for a in arguments]


def _check_files(value: Any, root: str | None) -> Any:
    """Return rendered ``files`` as a list; raise ``ConfigError`` for a value that cannot be one."""
    from airflow_parallelrun.core.inputs.paths import check_path, is_within

    files = files_from_rendered(value)
    if files is None:
        return None
    if isinstance(files, str) or not isinstance(files, Sequence):
        raise ConfigError(
            f"files={files!r} rendered to a {type(files).__name__}, not a list of paths; give a list, an "
            "upstream task's output, or a template rendering a JSON list ('{{ ... | tojson }}')"
        )
    for entry in files:
        if not isinstance(entry, str) or not entry:
            raise ConfigError(
                f"files entry {entry!r} is not a path; give file paths or URLs as strings, "
                "e.g. ['/data/a.png']"
            )
        check_path("files", entry)
        name = (
            entry
            if root is None or "://" in entry or entry.startswith("/")
            else f"{root.rstrip('/')}/{entry}"
        )
        if root is not None and not is_within(name, root):
            raise ConfigError(
                f"files entry {entry!r} is outside the input folder {root!r}; list only files inside it "
                "(relative to it, or absolute in the same form), or drop path= to take any file"
            )
    return files


#: How the partition's template fields are named to a DAG author.
_FIELD_NAMES = {"input_path": "inputs.path", "input_files": "inputs.files", "config_templates": "config"}


def _spec(output_path: str, config: ParallelRunConfig, entry_script: str, arguments: Sequence[str]) -> Any:
    from airflow_parallelrun.core.spec import RunSpec

    return RunSpec(
        output_path=output_path,
        config=config,
        entry_script=entry_script,
        arguments=tuple(str(a) for a in arguments),
    )


def _check_output_path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"output_path={value!r} rendered to an empty or non-string value; give a folder or fsspec URL, "
            "e.g. '/data/out/{{ run_id }}'"
        )
    return value


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
        if _http_status(exc) == 404:
            return False
        raise
    return str(getattr(state, "value", state)) in ACTIVE_DAG_RUN_STATES


def _http_status(exc: Exception) -> int | None:
    """Return the HTTP status of an Execution API error, as a task process or ``dag.test()`` gets it.

    Under a supervisor the task gets an ``AirflowRuntimeError`` whose detail holds the status;
    in ``dag.test()`` the API client's ``ServerResponseError`` (an httpx error) comes through.
    """
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None:
        detail = getattr(getattr(exc, "error", None), "detail", None)
        status = detail.get("status_code") if isinstance(detail, dict) else None
    return int(status) if status is not None else None


def run_config(context: Context, config: ParallelRunConfig, partition_task_id: str) -> ParallelRunConfig:
    """Return the configuration of this DAG run: ``config`` with the values the partition rendered."""
    if not config.templates:
        return config
    values = context["ti"].xcom_pull(task_ids=partition_task_id, key=CONFIG_KEY) or {}
    return config.rendered(values)


class PartitionOperator(BaseOperator):
    """List the input, split it into mini-batches, and return their descriptors for mapping."""

    template_fields: Sequence[str] = (
        "input_path",
        "input_files",
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
                raise _fail(
                    f"{_FIELD_NAMES.get(name, name)}={template!r} could not be rendered: "
                    f"{type(exc).__name__}: {exc}; fix the template, or set the Param or value it uses"
                ) from None

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_parallelrun.core import steps
        from airflow_parallelrun.core.errors import OutputPathInUse
        from airflow_parallelrun.core.inputs.paths import check_path

        config = self.config
        if self.config_templates:
            try:
                config = config.rendered(self.config_templates)
            except ConfigError as exc:
                raise _fail(f"this DAG run's parameters make an invalid ParallelRunConfig: {exc}") from None
            self.log.info("configuration of this run: %s", self.config_templates)
        try:
            # Each is a rendered value: a retry renders it again the same, so fail at once.
            output_path = check_path(
                "output_path", _check_output_path(self.output_path), self._templates["output_path"]
            )
            if self.input_path is not None:
                check_path("inputs.path", str(self.input_path), self._templates["inputs.path"])
            config.batch_size(tabular=self.inputs.tabular)
            arguments = _check_arguments(self.arguments)
            files = _check_files(self.input_files, self.input_path)
        except ConfigError as exc:
            raise _fail(f"this DAG run's rendered values are invalid: {exc}") from None
        config = render_environment(self, context, config)
        dataset = self.inputs.with_source(self.input_path, files)
        root = input_root(dataset.path, dataset.files)
        use_connections(root, self.inputs.conn_id, output_path, self.output_conn_id)
        spec = _spec(output_path, config, self.entry_script, arguments)
        run_key = steps.new_run_key()
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
            raise _fail(str(exc)) from exc
        except ConfigError as exc:
            raise _fail(f"this run's configuration is invalid: {exc}") from None
        if warming := steps.start_warm_workers(spec, len(descriptors)):
            self.log.info(
                "starting %d warm worker(s) on this node while the run tasks are scheduled", warming
            )
        if self.config_templates:
            context["ti"].xcom_push(key=CONFIG_KEY, value=self.config_templates)
        context["ti"].xcom_push(key=OUTPUT_PATH_KEY, value=output_path)
        context["ti"].xcom_push(key=RUN_KEY_KEY, value=run_key)
        context["ti"].xcom_push(key=INPUT_ROOT_KEY, value=root)
        return descriptors


class RunMiniBatchOperator(BaseOperator):
    """Run one mini-batch through the entry script; mapped once per mini-batch."""

    template_fields: Sequence[str] = ("arguments",)
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        from airflow_parallelrun.core.outputs.status import SKIPPED

        ti = context["ti"]
        output_path = pull_output_path(
            context, self.partition_task_id, self.input_conn_id, self.output_conn_id
        )
        config = render_environment(self, context, run_config(context, self.config, self.partition_task_id))
        try:
            arguments = _check_arguments(self.arguments)
        except ConfigError as exc:
            raise _fail(f"this DAG run's rendered values are invalid: {exc}") from None
        spec = _spec(str(output_path), config, self.entry_script, arguments)
        first, count = int(self.mini_batch["index"]), int(self.mini_batch.get("count", 1))
        # A first try honours an abort; a cleared or retried task instance runs whatever happened.
        try:
            statuses = steps.run_mini_batches(
                range(first, first + count),
                spec,
                run_id=context["run_id"],
                run_key=pull_run_key(context, self.partition_task_id),
                honour_abort=ti.try_number <= 1,
            )
        except RunSuperseded as exc:
            raise _fail(str(exc)) from exc
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
            raise _fail("\n".join(_failure_line(s) for s in failed))
        if all(s.status == SKIPPED for s in statuses):
            raise _skip(f"skipped: {statuses[0].error_message}")
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


class AggregateOperator(BaseOperator):
    """Count every mini-batch, apply the thresholds, merge the outputs, write summary and report."""

    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        partition_task_id: str,
        config: ParallelRunConfig,
        input_conn_id: str | None = None,
        output_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
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
        config = run_config(context, self.config, self.partition_task_id)
        try:
            summary = steps.aggregate(
                _spec(output_path, config, "", ()),
                run_id=context["run_id"],
                run_key=pull_run_key(context, self.partition_task_id),
            )
        except ThresholdExceeded as exc:
            raise _fail(str(exc)) from None
        except ParallelRunError as exc:
            # Retrying would fail the same way: the summary already says failed and why.
            raise _fail(str(exc)) from exc
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
            return _fail(
                f"the partition task {self.partition_task_id!r} left no output path, so there is nothing "
                f"to aggregate, and its state could not be read ({unreadable}); see the partition task's "
                "log, fix what it says, and clear it"
            )
        if state == "success":
            return _fail(
                f"the partition task {self.partition_task_id!r} succeeded but its output path is not in "
                f"XCom (key {OUTPUT_PATH_KEY!r}; were its XComs deleted?); clear the partition task to "
                "partition the input again"
            )
        if state == "skipped":
            return _skip(f"the partition task {self.partition_task_id!r} was skipped: nothing ran")
        if state == "upstream_failed":
            return _fail(
                f"the partition task {self.partition_task_id!r} did not run because a task before it "
                "failed; see that task's log, fix it, and clear it"
            )
        return _fail(
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


def _skip(message: str) -> Exception:
    try:
        from airflow.sdk.exceptions import AirflowSkipException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef]
    return AirflowSkipException(message)


def max_active_run_tasks(config: ParallelRunConfig) -> int:
    """Return how many run task instances of a DAG run may be in flight at once.

    Without warm workers each runs its own worker: ``node_count * process_count_per_node``.
    With them the node's pool bounds the ``run()`` calls to ``process_count_per_node``, and one
    more task instance per worker may start and wait for it, so that Airflow's start-up of the
    next task instance overlaps the current ``run()`` instead of leaving the worker idle.
    """
    return config.concurrency * (2 if config.warm_workers else 1)


def max_map_length() -> int:
    """Return how many task instances Airflow lets one task map to (``[core] max_map_length``)."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1
        from airflow.configuration import conf
    return conf.getint("core", "max_map_length", fallback=1024)


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
    output; they are never written to the run's storage, its reports or XCom. So are secrets for
    the entry script: ``environment_variables`` values such as ``"{{ conn.my_api.password }}"``
    are rendered inside each task, masked in its log. A rendered value that is invalid (a path,
    ``files``, ``arguments``, a config template, an environment template) fails the task at
    once, without Airflow retries. ``output_asset``
    (an ``Asset``) is emitted by the aggregate task when the run succeeds, with the run's counts,
    merged output URL and run id as the event's extra.
    Above ``[core] max_map_length`` mini-batches, each mapped task instance
    runs a pack of consecutive mini-batches, each still with its own tries, timeout and status.
    Other keyword arguments (``retries``, ``pool``, ``queue``, ``execution_timeout`` ...) go to
    the three tasks.
    """

    def __init__(
        self,
        *,
        task_id: str,
        inputs: FileDataset | TabularDataset,
        output_path: str,
        config: ParallelRunConfig,
        arguments: Sequence[str] = (),
        resume: bool = False,
        output_conn_id: str | None = None,
        output_asset: Any = None,
        tooltip: str = "",
        dag: Any = None,
        **operator_kwargs: Any,
    ) -> None:
        if not isinstance(inputs, (FileDataset, TabularDataset)):
            raise ConfigError(
                f"inputs={inputs!r} is not a dataset; give FileDataset(path=..., pattern=...) or "
                "TabularDataset(path=..., format=...)"
            )
        if not isinstance(config, ParallelRunConfig):
            raise ConfigError(f"config={config!r} is not a ParallelRunConfig; give ParallelRunConfig(...)")
        if isinstance(arguments, str) or not isinstance(arguments, Sequence):
            raise ConfigError(
                f"arguments={arguments!r} must be a list of strings, e.g. ['--model_name', 'iris']"
            )
        if "mini_batch_size" not in config.templates:
            config.batch_size(tabular=inputs.tabular)  # a size in the wrong unit fails at parse time
        group_kwargs: dict[str, Any] = {"group_id": task_id, "tooltip": tooltip or "parallel run"}
        if dag is not None:
            group_kwargs["dag"] = dag
        super().__init__(**group_kwargs)
        self.config = config
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
            connections = {"input_conn_id": inputs.conn_id, "output_conn_id": output_conn_id}
            self.run_task = RunMiniBatchOperator.partial(
                task_id="run",
                partition_task_id=self.partition_task.task_id,
                config=config,
                entry_script=self.entry_script,
                arguments=list(arguments),
                max_active_tis_per_dagrun=max_active_run_tasks(config),
                map_index_template="{{ task.mini_batch['label'] }}",
                **connections,
                **operator_kwargs,
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
