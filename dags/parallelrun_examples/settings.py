"""Where the example DAGs keep their data: ``$PARALLELRUN_EXAMPLES_DIR``, else under ``$AIRFLOW_HOME``."""

from __future__ import annotations

import os


def examples_dir() -> str:
    """Return the folder the examples make their data and models in."""
    explicit = os.environ.get("PARALLELRUN_EXAMPLES_DIR")
    if explicit:
        return explicit
    home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    return os.path.join(home, "parallelrun-examples")
