"""Check the values a task rendered from its templates: paths, files, arguments, environment secrets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.datasets import files_from_rendered
from airflow_parallelrun.operators.task_sdk import fail, mask_secret

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

    from airflow_parallelrun.core.config import ParallelRunConfig


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
            raise fail(
                f"environment_variables[{name!r}]={template!r} could not be rendered: {_render_error(exc)}; "
                "check that the Connection or Variable it names exists and the template's spelling, "
                "e.g. '{{ conn.my_api.password }}' or '{{ var.value.my_api_key }}'"
            ) from None
        text = "" if value is None else str(value)
        if text:
            mask_secret(text)
        values[name] = text
    return config.with_environment(values)


def check_arguments(arguments: Any) -> list[str]:
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


def check_files(value: Any, root: str | None) -> Any:
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


def check_output_path(value: Any) -> str:
    """Return the rendered ``output_path``; raise ``ConfigError`` when it is empty or not text."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"output_path={value!r} rendered to an empty or non-string value; give a folder or fsspec URL, "
            "e.g. '/data/out/{{ run_id }}'"
        )
    return value
