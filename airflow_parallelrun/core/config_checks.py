"""Check a ParallelRunConfig: one small check per concern, each error naming the field, the value and the fix.

Also what a DAG file's environment variables may hold: a value whose name looks secret must come
from a template (a Connection or a Variable), never be written in the file.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.models.refs import model_refs
from airflow_parallelrun.core.sizes import MiniBatchSize, is_mini_batch_size


class ConfigFields(Protocol):
    """The fields of a ParallelRunConfig the checks read: a type of their own, so no import circle forms."""

    @property
    def entry_script(self) -> str: ...
    @property
    def mini_batch_size(self) -> Any: ...
    @property
    def error_threshold(self) -> int: ...
    @property
    def allowed_failed_count(self) -> int | None: ...
    @property
    def allowed_failed_percent(self) -> float | None: ...
    @property
    def output_action(self) -> str: ...
    @property
    def append_row_file_name(self) -> str | None: ...
    @property
    def append_row_format(self) -> str: ...
    @property
    def run_invocation_timeout(self) -> float: ...
    @property
    def run_max_try(self) -> int: ...
    @property
    def node_count(self) -> int: ...
    @property
    def process_count_per_node(self) -> int | None: ...
    @property
    def environment_variables(self) -> Mapping[str, str]: ...
    @property
    def logging_level(self) -> str: ...
    @property
    def warm_workers(self) -> bool: ...
    @property
    def worker_idle_timeout(self) -> float: ...
    @property
    def mini_batches_per_task(self) -> int | str: ...
    @property
    def prefetch_mini_batches(self) -> int: ...
    @property
    def models(self) -> Mapping[str, str]: ...
    @property
    def gpus_per_node(self) -> int | None: ...
    @property
    def resource_monitor_interval(self) -> float: ...
    @property
    def partition_keys(self) -> Sequence[str] | None: ...
    @property
    def python(self) -> str | None: ...
    @property
    def requirements(self) -> Sequence[str]: ...
    @property
    def venv_cache_path(self) -> str | None: ...
    @property
    def progress_update_timeout(self) -> float | None: ...
    @property
    def progress_log_interval(self) -> float: ...


OUTPUT_ACTIONS = ("append_row", "summary_only")
APPEND_ROW_FORMATS = ("text", "csv", "parquet")

#: Words that make an environment variable's name look like it holds a secret; its value must
#: then come from a template (a Connection or a Variable), never be written in the DAG file.
SECRET_NAME_WORDS = frozenset(
    [
        "KEY",
        "KEYS",
        "APIKEY",
        "SECRET",
        "SECRETS",
        "TOKEN",
        "TOKENS",
        "PASSWORD",
        "PASSWD",
        "PWD",
        "CREDENTIAL",
        "CREDENTIALS",
    ]
)


def looks_secret(name: str) -> bool:
    """Tell whether an environment variable's name says it holds a secret.

    >>> [looks_secret(n) for n in ("API_KEY", "DB_PASSWORD", "GithubToken", "GREETING", "MONKEY")]
    [True, True, True, False, False]
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return any(word in SECRET_NAME_WORDS for word in re.split(r"[^A-Za-z0-9]+", spaced.upper()))


def is_template(value: object) -> bool:
    """Tell whether ``value`` is a Jinja template rather than a literal."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _require_int(name: str, value: object, minimum: int, fix: str, *, allow: tuple = ()) -> None:
    if value in allow and value is not True and value is not False:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is invalid: expected a whole number >= {minimum}; {fix}")


def check_environment(env: object, *, literal_secrets: bool = False) -> None:
    """Refuse anything but names to text values; and a secret written in the DAG file.

    Errors name the variable, never its value: that may be a secret.
    """
    if not isinstance(env, Mapping):
        raise ConfigError(
            f"environment_variables is of type {type(env).__name__}, not a mapping; give a dict of names to "
            "string values, e.g. {'MODEL_NAME': 'iris'}"
        )
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ConfigError(
                f"environment_variables has an invalid name {name!r}: give non-empty strings without "
                "'=', e.g. 'MODEL_NAME'"
            )
        if not isinstance(value, str):
            raise ConfigError(
                f"environment_variables[{name!r}] is of type {type(value).__name__}, not a string; "
                "expected a mapping of names to string values: quote it, e.g. '1'"
            )
        if not literal_secrets and looks_secret(name) and value and not is_template(value):
            raise ConfigError(
                f"environment_variables[{name!r}] is written in the DAG file, but its name says it holds a "
                "secret, and a DAG file's values reach Airflow's metadata database. Take it from a "
                f"Connection or a Variable instead, e.g. {{{name!r}: '{{{{ conn.my_api.password }}}}'}} "
                "or '{{ var.value.my_api_key }}'; if it is not a secret, write it as a template, "
                "e.g. \"{{ 'value' }}\""
            )


def _check_entry_script(config: ConfigFields) -> None:
    if not isinstance(config.entry_script, str) or not config.entry_script.endswith(".py"):
        raise ConfigError(
            f"entry_script={config.entry_script!r} must be the path of a Python file, "
            "e.g. entry_script='scripts/score.py' (relative to the DAG file's folder, or absolute)"
        )


def _check_mini_batch_size(config: ConfigFields) -> None:
    size = config.mini_batch_size
    if size is None or isinstance(size, MiniBatchSize):
        return
    # The dataset picks the unit when the operator is built; here either spelling will do.
    if not is_mini_batch_size(size):
        raise ConfigError(
            f"mini_batch_size={size!r} is not a size: for a FileDataset give a "
            'count of files, e.g. "10"; for a TabularDataset give bytes, e.g. "1MB" or "500KB" '
            '(KB/MB/GB = x1024), or rows, e.g. "5000 rows"'
        )


def _check_thresholds(config: ConfigFields) -> None:
    _require_int(
        "error_threshold",
        config.error_threshold,
        -1,
        "give a number of failed items to tolerate, or -1 to ignore item failures",
    )
    if config.allowed_failed_count is not None:
        _require_int(
            "allowed_failed_count",
            config.allowed_failed_count,
            -1,
            "give a number of failed mini-batches to tolerate, -1 or None to ignore",
        )
    pct = config.allowed_failed_percent
    if pct is not None and (
        isinstance(pct, bool) or not isinstance(pct, (int, float)) or not (pct == -1 or 0 <= pct <= 100)
    ):
        raise ConfigError(
            f"allowed_failed_percent={pct!r} is invalid: expected a percentage from 0 to 100, "
            "or -1 or None to ignore"
        )


def _check_output(config: ConfigFields) -> None:
    if config.output_action not in OUTPUT_ACTIONS:
        raise ConfigError(
            f"output_action={config.output_action!r} is invalid: use 'append_row' (merge what run() "
            "returns into one file) or 'summary_only' (the script writes its own outputs)"
        )
    if config.append_row_format not in APPEND_ROW_FORMATS:
        raise ConfigError(
            f"append_row_format={config.append_row_format!r} is invalid: use one of "
            f"{', '.join(APPEND_ROW_FORMATS)}"
        )
    name = config.append_row_file_name
    if name is not None and (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or name.startswith("_parallelrun")
    ):
        raise ConfigError(
            f"append_row_file_name={name!r} is invalid: give a plain file name without a folder, "
            "e.g. 'parallel_run_step.txt'"
        )


def _is_seconds(value: object) -> bool:
    # NaN and infinity get past "<= 0" but crash the wait for run() (Connection.poll): refuse them.
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    )


def _check_tries_and_timeout(config: ConfigFields) -> None:
    if not _is_seconds(config.run_invocation_timeout):
        raise ConfigError(
            f"run_invocation_timeout={config.run_invocation_timeout!r} is invalid: expected a finite "
            "number of seconds > 0 for one run() call, e.g. 60"
        )
    _require_int("run_max_try", config.run_max_try, 1, "give the number of tries in all, e.g. 3")


def _check_processes(config: ConfigFields) -> None:
    _require_int("node_count", config.node_count, 1, "give the number of nodes, e.g. 1")
    if config.process_count_per_node is not None:
        _require_int(
            "process_count_per_node",
            config.process_count_per_node,
            1,
            "give the number of processes per node, e.g. 2, or None for the node's CPU count",
        )


def _check_workers(config: ConfigFields) -> None:
    if not isinstance(config.warm_workers, bool):
        raise ConfigError(
            f"warm_workers={config.warm_workers!r} is invalid: expected True (keep entry-script "
            "processes warm across mini-batches) or False (a new process per task instance)"
        )
    if not _is_seconds(config.worker_idle_timeout):
        raise ConfigError(
            f"worker_idle_timeout={config.worker_idle_timeout!r} is invalid: expected a finite number of "
            "seconds > 0 a warm worker waits for its next mini-batch, e.g. 60"
        )
    if config.mini_batches_per_task != "auto":
        _require_int(
            "mini_batches_per_task",
            config.mini_batches_per_task,
            1,
            "give 'auto', or how many consecutive mini-batches one run task instance runs, e.g. 1",
        )
    _require_int(
        "prefetch_mini_batches",
        config.prefetch_mini_batches,
        0,
        "give how many next mini-batches to fetch while one runs, e.g. 1 (0: fetch each when its turn comes)",
    )


def _check_progress(config: ConfigFields) -> None:
    timeout = config.progress_update_timeout
    if timeout is not None and not _is_seconds(timeout):
        raise ConfigError(
            f"progress_update_timeout={timeout!r} is invalid: expected a finite number of seconds > 0 that "
            "a run task may go without finishing a mini-batch before it fails, e.g. 600, or None for no limit"
        )
    interval = config.progress_log_interval
    if not (interval == 0 or _is_seconds(interval)):
        raise ConfigError(
            f"progress_log_interval={interval!r} is invalid: expected a finite number of seconds > 0 between "
            "progress log lines, e.g. 30, or 0 for none"
        )


def _check_logging_level(config: ConfigFields) -> None:
    level = config.logging_level
    if not isinstance(level, str) or logging.getLevelName(level.upper()) not in (
        logging.DEBUG,
        logging.INFO,
        logging.WARNING,
        logging.ERROR,
        logging.CRITICAL,
    ):
        raise ConfigError(f"logging_level={level!r} is invalid: use DEBUG, INFO, WARNING, ERROR or CRITICAL")


def _check_models_and_gpus(config: ConfigFields) -> None:
    model_refs(config.models)
    if config.gpus_per_node is not None:
        _require_int(
            "gpus_per_node",
            config.gpus_per_node,
            0,
            "give how many GPUs each node's workers share, e.g. 4, 0 for none, or None to count the node's",
        )


def _check_resource_monitor(config: ConfigFields) -> None:
    value = config.resource_monitor_interval
    if isinstance(value, bool) or (value != 0 and not _is_seconds(value)):
        raise ConfigError(
            f"resource_monitor_interval={value!r} is invalid: expected a finite number of seconds > 0 "
            "between two samples of the workers' CPU and memory, e.g. 10, or 0 to take none"
        )


def _check_python_environment(config: ConfigFields) -> None:
    """Check the form of ``python``, ``requirements`` and ``venv_cache_path``; a task checks the rest.

    The interpreter need not exist where the DAG is parsed, only on the worker nodes.
    """
    for name in ("python", "venv_cache_path"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(
                f"{name}={value!r} is invalid: give a path, e.g. python='/opt/envs/scoring/bin/python' or "
                "venv_cache_path='/var/cache/parallelrun-venvs', or None"
            )
    requirements = config.requirements
    if isinstance(requirements, str) or not isinstance(requirements, Sequence):
        raise ConfigError(
            f"requirements={requirements!r} is invalid: give a list of pip requirement specifiers, "
            "e.g. requirements=['pandas==2.2.*', 'scikit-learn==1.5.2']"
        )
    for requirement in requirements:
        if (
            not isinstance(requirement, str)
            or not requirement.strip()
            or requirement.lstrip().startswith("-")
        ):
            raise ConfigError(
                f"requirements has {requirement!r}, which is not a requirement specifier: give one package "
                "each, e.g. 'pandas==2.2.*'. pip options are not taken here; set them in pip.conf or "
                "PIP_* environment variables on the workers (e.g. PIP_INDEX_URL)"
            )
    if config.venv_cache_path is not None and not requirements:
        raise ConfigError(
            f"venv_cache_path={config.venv_cache_path!r} is set but requirements is empty: venv_cache_path "
            "is where environments built from requirements are kept; give requirements=[...] or drop it"
        )


#: One check per concern, in the order a DAG author reads the fields.
CHECKS: tuple[Callable[[ConfigFields], None], ...] = (
    _check_entry_script,
    _check_mini_batch_size,
    _check_thresholds,
    _check_output,
    _check_tries_and_timeout,
    _check_processes,
    _check_workers,
    _check_progress,
    _check_logging_level,
    _check_models_and_gpus,
    _check_resource_monitor,
    lambda config: check_environment(config.environment_variables),
    _check_python_environment,
)
