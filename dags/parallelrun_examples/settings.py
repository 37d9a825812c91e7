"""Where the example DAGs keep their data: ``$PARALLELRUN_EXAMPLES_DIR``, else under ``$AIRFLOW_HOME``."""

from __future__ import annotations

import os
from typing import Any


def examples_dir() -> str:
    """Return the folder the examples make their data and models in."""
    explicit = os.environ.get("PARALLELRUN_EXAMPLES_DIR")
    if explicit:
        return explicit
    home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    return os.path.join(home, "parallelrun-examples")


def data_dir_pattern() -> str:
    """Return the JSON-schema pattern of a ``data_dir`` Param: the examples folder or a folder under it.

    Folder names are letters, digits, "_", "." and "-", and never start with "." (so no ".."): a
    run's input and output cannot be pointed outside the examples folder from the trigger form.
    """
    root = examples_dir().rstrip("/") or "/"
    # Escaped by hand: JavaScript (the trigger form) refuses Python's "\-" in a unicode pattern.
    escaped = "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in root)
    # The look-ahead refuses any line break: Python's "$" also matches before a final newline.
    return r"^(?![\s\S]*[\n\r])" + escaped + r"(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*/?$"


def data_dir_param() -> Any:
    """Return the ``data_dir`` Param of the examples: the examples folder or a folder under it."""
    from airflow.sdk import Param

    return Param(
        examples_dir(),
        type="string",
        title="Folder of the example data and models",
        description=f"{examples_dir()} or a folder under it.",
        pattern=data_dir_pattern(),
    )
