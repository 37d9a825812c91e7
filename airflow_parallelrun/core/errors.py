"""The exceptions the engine raises, under one base.

User-code failures (:class:`EntryScriptError` and its children) are told apart from
framework failures, so a report can say whose fault a failed mini-batch was.
"""

from __future__ import annotations


class ParallelRunError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ParallelRunError, ValueError):
    """A configuration value is invalid: the message names the field, the value and the fix."""


class InputError(ParallelRunError):
    """The input cannot be listed or read (missing folder, unreadable or corrupt file)."""


class SqlSourceError(InputError):
    """A SQL input could not be read: the connection, the table or the query failed in the database.

    The message names the Connection id (or the URL with its password hidden) and the database's
    own message; a retry would meet the same, so the partition step fails once.
    """


class InputReadError(InputError):
    """An input could not be read; ``items`` is how many items failed with it, if known."""

    def __init__(self, message: str, items: int | None) -> None:
        super().__init__(message)
        self.items = items


class TableReadError(InputReadError):
    """A piece of a table could not be read or parsed."""


class StorageError(ParallelRunError):
    """The run's storage kept failing after retries."""


class StorageConflict(ParallelRunError):
    """The store refused a write as another operation on the same name is in progress: try again.

    S3's ``409 ConditionalRequestConflict`` to a conditional create; the storage retries treat it
    as transient.
    """


class EntryScriptError(ParallelRunError):
    """The user's entry script failed; ``traceback`` holds the script's own frames."""

    category = "entry_script"

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class EntryScriptLoadError(EntryScriptError):
    """The entry script cannot be imported, has no ``run()``, or its ``init()`` raised."""

    category = "entry_script_load"


class WorkerEnvironmentError(EntryScriptLoadError):
    """The entry script cannot load as its Python environment (``python=``, ``requirements=``) is unusable.

    The user's to fix, as a script that cannot import is: the message names the interpreter or
    the requirements and what to do; ``traceback`` holds what the interpreter or pip printed.
    """

    category = "environment"


class RunOutputError(EntryScriptError):
    """``run()`` returned something the engine cannot count or write."""

    category = "run_output"


class RunTimeoutError(EntryScriptError):
    """``run()`` did not return within ``run_invocation_timeout``."""

    category = "timeout"


class ThresholdExceeded(ParallelRunError):
    """Failed items or mini-batches exceeded a configured bound."""


class OutputPathInUse(ParallelRunError):
    """Another run that is still active owns the run state at this ``output_path``."""


class RunSuperseded(ParallelRunError):
    """The run state at ``output_path`` now belongs to another run: this run publishes nothing more."""


class AggregateError(ParallelRunError):
    """The aggregate step itself failed (not a threshold): its summary says failed, with the error."""


class SqlOutputError(ParallelRunError):
    """A SQL sink's table cannot be written: the message names the database (never its password)."""
