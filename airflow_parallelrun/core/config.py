"""The configuration of one parallel run step, named and defaulted as Azure ML's ParallelRunConfig."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.config_checks import (
    APPEND_ROW_FORMATS,
    CHECKS,
    OUTPUT_ACTIONS,
    SECRET_NAME_WORDS,
    check_environment,
    is_template,
    looks_secret,
)
from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.partition_keys import check_partition_keys, partition_keys_of
from airflow_parallelrun.core.sizes import MiniBatchSize, fits, parse_mini_batch_size

__all__ = [
    "APPEND_ROW_FORMATS",
    "AUTO_TASKS_PER_PROCESS",
    "OUTPUT_ACTIONS",
    "SECRET_NAME_WORDS",
    "TEMPLATED_FIELDS",
    "ParallelRunConfig",
    "is_template",
    "looks_secret",
]

_DEFAULT_FILE_NAMES = {
    "text": "parallel_run_step.txt",
    "csv": "parallel_run_step.csv",
    "parquet": "parallel_run_step.parquet",
}


#: With ``mini_batches_per_task="auto"``, how many run task instances per process of the run
#: (``node_count * process_count_per_node``) at most; above, consecutive mini-batches are packed.
AUTO_TASKS_PER_PROCESS = 4

#: Fields a DAG may take from a Param or macro: a Jinja string, rendered by the partition task
#: of each DAG run and checked then, as any other value is checked when the DAG is parsed.
TEMPLATED_FIELDS = (
    "mini_batch_size",
    "error_threshold",
    "allowed_failed_count",
    "allowed_failed_percent",
    "run_invocation_timeout",
    "run_max_try",
)


def _from_text(name: str, value: Any) -> Any:
    """Turn a rendered template into the value it stands for; leave anything else as it is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if name == "mini_batch_size":
        return text
    if text.lower() in ("", "none", "null"):
        return None
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return value


@dataclass(frozen=True)
class ParallelRunConfig:
    """How to run the entry script over the mini-batches, and when the run counts as failed.

    Defaults follow Azure ML: 10 files or 1MB per mini-batch, 60 s per ``run()`` call, 3 tries in
    all. ``error_threshold`` bounds failed items over the whole run (default 10, -1 ignores);
    ``allowed_failed_count`` and ``allowed_failed_percent`` bound failed mini-batches (None
    ignores). ``append_row_format`` picks the merged file's format: Azure's plain text, csv with a
    header, or parquet. ``append_row_file_name`` defaults to ``parallel_run_step.<txt|csv|parquet>``.
    ``process_count_per_node`` None (the default) means the CPU count of each worker node where
    the run's pool of entry-script processes starts; Airflow's bound on the run tasks in flight
    (``concurrency``) then takes the CPU count of the machine that parses the DAG.
    ``mini_batch_size``, the three bounds, ``run_invocation_timeout`` and ``run_max_try`` may be
    Jinja templates, e.g. ``"{{ params.error_threshold }}"``, so a UI form sets them per run; the
    partition task renders and checks them, and every task of the run uses what it rendered.
    ``mini_batches_per_task`` is how many consecutive mini-batches one mapped run task instance
    runs at most, each still with its own tries, timeout and status: ``"auto"`` (the default)
    gives one task instance per mini-batch up to ``AUTO_TASKS_PER_PROCESS`` per process of the
    run, and shares them evenly among that many above it, so Airflow's per-task cost stays small
    next to the scoring.
    ``prefetch_mini_batches`` (default 1) is how many of a task instance's next mini-batches
    have their remote inputs fetched to the node's local scratch disk while ``run()`` scores the
    current one; 0 fetches each only when its turn comes. Local inputs are never copied.
    ``warm_workers`` (default on) keeps up to ``process_count_per_node`` entry-script processes
    of the run warm on each node, so imports and ``init()`` are paid once per process rather
    than once per task instance; they stop after ``worker_idle_timeout`` seconds without work.
    ``environment_variables`` values may be Jinja templates, e.g. ``"{{ conn.my_api.password }}"``
    or ``"{{ var.value.my_api_key }}"``: each task that starts workers renders them itself and
    registers them with Airflow's secrets masker; they never reach the serialized DAG, XCom,
    rendered template fields or the run's storage. A literal value whose name looks secret
    (a word KEY, SECRET, TOKEN, PASSWORD, PASSWD, PWD or CREDENTIAL) is refused, as a DAG file's
    values are stored in Airflow's metadata database; ``repr`` shows variable names only.
    ``models`` names the models the entry script loads, as Azure registers them:
    ``{"mnist-prs": "/models/mnist"}`` or ``{"mnist-prs:2": "s3://bucket/mnist"}`` (a key without
    ``:version`` is version 1; a relative path is relative to the DAG file's folder). Each node
    stages them once (a local path in place, a URL downloaded into the node's cache) and every
    worker finds them where Azure scripts look: ``azureml.core.Model.get_model_path(name)`` and
    ``AZUREML_MODEL_DIR`` (the model's folder for one model, the folder of all for several).
    ``gpus_per_node`` is how many GPUs each node's workers share, one per worker as in Azure
    (``CUDA_VISIBLE_DEVICES`` of worker ``i`` is GPU ``i % n``); None (the default) counts the
    node's own, 0 sets nothing.
    ``resource_monitor_interval`` (default 10 s; Azure's default is 600) is how often each node
    samples the CPU, resident memory and GPU memory of its workers into
    ``_parallelrun/perf/<node>/`` for the report; 0 takes no samples.
    ``partition_keys`` (as Azure's, e.g. ``["Store", "Brand"]``) makes one mini-batch per key
    group instead of cutting by size, so it excludes ``mini_batch_size``: a TabularDataset's or
    SqlDataset's rows grouped by those columns' values (a group arrives whole in one DataFrame,
    whatever files it spans), a FileDataset's files grouped by the keys its ``partition_format``
    reads from their paths. An entry script whose ``run()`` takes two positional parameters gets
    ``mini_batch_context`` (``partition_key_value``, ``minibatch_index``, ``dataset``) as the second.
    ``python`` (the path of an interpreter that exists on every worker node, as Airflow's
    ExternalPythonOperator takes) runs the entry-script workers in that interpreter instead of
    Airflow's, so a script gets the libraries it was written for; it needs Python 3.11 or later
    and no Airflow, and is checked when a task starts. ``requirements`` (pip specifiers, e.g.
    ``["pandas==2.2.*", "scikit-learn==1.5.2"]``) builds a virtual environment from ``python``
    (default: Airflow's interpreter) once per node, cached in ``venv_cache_path`` (default
    ``~/.cache/airflow-parallelrun/venvs``) and reused by later runs, as PythonVirtualenvOperator
    does; a requirement pip cannot install fails the run once with pip's message. Either way the
    workers import this package from Airflow's installation, never from the other interpreter
    (see docs/warm-workers.md#a-python-environment-per-step).
    ``progress_update_timeout`` (Azure's name; default None, no limit) fails a run task instance
    that has not finished a mini-batch for that many seconds while running one, killing its
    worker, instead of leaving it to ``execution_timeout`` (docs/recovery.md). Every
    ``progress_log_interval`` seconds (default 30; 0 for none) each run task logs Azure's
    "Processed X of Y mini batches" line for itself and for the whole run (docs/progress.md).
    """

    entry_script: str
    mini_batch_size: str | int | MiniBatchSize | None = None
    error_threshold: int = 10
    allowed_failed_count: int | None = None
    allowed_failed_percent: float | None = None
    output_action: str = "append_row"
    append_row_file_name: str | None = None
    append_row_format: str = "text"
    run_invocation_timeout: float = 60
    run_max_try: int = 3
    node_count: int = 1
    process_count_per_node: int | None = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    logging_level: str = "INFO"
    warm_workers: bool = True
    worker_idle_timeout: float = 60
    mini_batches_per_task: int | str = "auto"
    prefetch_mini_batches: int = 1
    models: Mapping[str, str] = field(default_factory=dict)
    gpus_per_node: int | None = None
    resource_monitor_interval: float = 10
    partition_keys: Sequence[str] | None = None
    python: str | None = None
    requirements: Sequence[str] = ()
    venv_cache_path: str | None = None
    progress_update_timeout: float | None = None
    progress_log_interval: float = 30

    if TYPE_CHECKING:
        # What a DAG may pass: the fields in TEMPLATED_FIELDS also take a Jinja string
        # ("{{ params.x }}"), which the partition task renders and checks; the tasks and the core
        # only ever see the rendered numbers, as the fields' own types say.
        def __init__(
            self,
            entry_script: str,
            mini_batch_size: str | int | MiniBatchSize | None = None,
            error_threshold: int | str = 10,
            allowed_failed_count: int | str | None = None,
            allowed_failed_percent: float | str | None = None,
            output_action: str = "append_row",
            append_row_file_name: str | None = None,
            append_row_format: str = "text",
            run_invocation_timeout: float | str = 60,
            run_max_try: int | str = 3,
            node_count: int = 1,
            process_count_per_node: int | None = None,
            environment_variables: Mapping[str, str] = ...,
            logging_level: str = "INFO",
            warm_workers: bool = True,
            worker_idle_timeout: float = 60,
            mini_batches_per_task: int | str = "auto",
            prefetch_mini_batches: int = 1,
            models: Mapping[str, str] = ...,
            gpus_per_node: int | None = None,
            resource_monitor_interval: float = 10,
            partition_keys: Sequence[str] | None = None,
            python: str | None = None,
            requirements: Sequence[str] = (),
            venv_cache_path: str | None = None,
            progress_update_timeout: float | None = None,
            progress_log_interval: float = 30,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition_keys", partition_keys_of(self.partition_keys))
        # Before the templates are set aside: a templated mini_batch_size is given all the same.
        check_partition_keys(self)
        if isinstance(self.requirements, list):  # as a header read from JSON gives it
            object.__setattr__(self, "requirements", tuple(self.requirements))
        templates = self.templates
        if templates:
            # Check every other field now; the templated ones are checked once rendered.
            defaults: dict[str, Any] = {f.name: f.default for f in fields(self) if f.name in templates}
            replace(self, **defaults)
            return
        for check in CHECKS:
            check(self)

    def __repr__(self) -> str:
        # Environment values may be secrets (rendered from a Connection): show names only, as
        # this text is what Airflow stores of the config in the serialized DAG and shows in logs.
        shown = {
            f.name: {name: "***" for name in self.environment_variables}
            if f.name == "environment_variables"
            else getattr(self, f.name)
            for f in fields(self)
        }
        return f"ParallelRunConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    __str__ = __repr__

    @property
    def environment_templates(self) -> dict[str, str]:
        """Return the environment variables whose values are Jinja templates, to render per task."""
        return {name: value for name, value in self.environment_variables.items() if is_template(value)}

    def with_environment(self, values: Mapping[str, str]) -> ParallelRunConfig:
        """Return this config with environment variables set to ``values`` (rendered in a task).

        The check that a secret-looking name has a templated value applies to what a DAG file
        gives, not to what a task rendered, so it is not run again here.
        """
        check_environment(values, literal_secrets=True)
        config = copy.copy(self)
        object.__setattr__(config, "environment_variables", {**self.environment_variables, **values})
        return config

    @property
    def templates(self) -> dict[str, str]:
        """Return the fields given as Jinja templates (``"{{ params.error_threshold }}"``)."""
        return {
            name: value
            for name in TEMPLATED_FIELDS
            if isinstance(value := getattr(self, name), str) and "{{" in value
        }

    def rendered(self, values: Mapping[str, Any]) -> ParallelRunConfig:
        """Return this config with its templated fields set to their rendered ``values``, checked.

        A rendered number arrives as text ("10", "-1", "0.5"); "" or "None" means None.
        Raise ``ConfigError`` naming the field and the value when one is invalid.
        """
        return replace(self, **{name: _from_text(name, value) for name, value in values.items()})

    @property
    def concurrency(self) -> int:
        """How many mini-batches of one run may execute at once.

        With ``process_count_per_node`` None, this machine's CPU count stands for each node's.
        """
        return self.node_count * int(self.process_count_per_node or os.cpu_count() or 1)

    @property
    def output_file_name(self) -> str:
        return self.append_row_file_name or _DEFAULT_FILE_NAMES[self.append_row_format]

    def run_task_count(self, total: int, max_tasks: int | None = None) -> int:
        """Return how many run task instances share ``total`` mini-batches.

        ``"auto"``: one per mini-batch up to ``AUTO_TASKS_PER_PROCESS`` per process of the run
        (a multiple of the processes, so none idles at the end); ``N``: enough for at most N
        each. ``max_tasks`` (Airflow's ``max_map_length``) bounds the count whatever the setting.

        >>> config = ParallelRunConfig(entry_script="s.py", process_count_per_node=2)
        >>> [config.run_task_count(n) for n in (0, 5, 8, 9, 2000)]
        [0, 5, 8, 8, 8]
        >>> one_each = ParallelRunConfig(entry_script="s.py", mini_batches_per_task=1)
        >>> one_each.run_task_count(5000, max_tasks=1024)
        1024
        """
        if self.mini_batches_per_task == "auto":
            tasks = min(total, AUTO_TASKS_PER_PROCESS * self.concurrency)
        else:
            tasks = math.ceil(total / int(self.mini_batches_per_task))
        return min(tasks, max_tasks) if max_tasks else tasks

    def batch_size(self, *, tabular: bool) -> MiniBatchSize:
        """Return the mini-batch size in the unit the dataset uses (parsed already by ``for_dataset``)."""
        size = self.mini_batch_size
        if not isinstance(size, MiniBatchSize):
            return parse_mini_batch_size(size, tabular=tabular)
        if not fits(size, tabular=tabular):
            kind = "a TabularDataset (bytes or rows)" if tabular else "a FileDataset (a count of files)"
            raise ConfigError(
                f"mini_batch_size={size.value} {size.unit} does not fit {kind}; give the size in that unit"
            )
        return size

    def for_dataset(self, *, tabular: bool) -> ParallelRunConfig:
        """Return this config with ``mini_batch_size`` parsed in the dataset's unit, checked once.

        Raise ``ConfigError`` when the size is not in a unit of that kind of dataset.
        """
        if isinstance(self.mini_batch_size, MiniBatchSize):
            self.batch_size(tabular=tabular)
            return self
        if self.partition_keys is not None:
            return self  # one mini-batch per key group: no size to parse
        config = copy.copy(self)
        object.__setattr__(config, "mini_batch_size", self.batch_size(tabular=tabular))
        return config

    def to_header(self) -> dict[str, Any]:
        """Return this resolved config as the run's manifest header stores it (JSON).

        Environment variables go by name only: their values may be secrets, rendered per task.
        """
        if self.templates:
            raise ConfigError(
                f"the configuration still holds templates {sorted(self.templates)}; render it first"
            )
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "environment_variables"}
        size = self.mini_batch_size
        if isinstance(size, MiniBatchSize):
            data["mini_batch_size"] = {"unit": size.unit, "value": size.value}
        data["environment_variable_names"] = sorted(self.environment_variables)
        return data

    @classmethod
    def from_header(
        cls, data: Mapping[str, Any], environment_variables: Mapping[str, str] | None = None
    ) -> ParallelRunConfig:
        """Return the config ``to_header`` stored, with the task's own ``environment_variables``."""
        names = {f.name for f in fields(cls)} - {"environment_variables"}
        values = {name: value for name, value in data.items() if name in names}
        size = values.get("mini_batch_size")
        if isinstance(size, Mapping):
            values["mini_batch_size"] = MiniBatchSize(size["unit"], int(size["value"]))
        return cls(**values, environment_variables=dict(environment_variables or {}))

    def thresholds(self) -> dict[str, float | int | None]:
        return {
            "error_threshold": self.error_threshold,
            "allowed_failed_count": self.allowed_failed_count,
            "allowed_failed_percent": self.allowed_failed_percent,
        }
