"""The provider's metadata, read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

PLUGIN_NAME = "parallelrun"
PLUGIN_CLASS = "airflow_parallelrun.plugins.parallel_run_plugin.ParallelRunPlugin"


def get_provider_info() -> dict[str, Any]:
    """Return the metadata Airflow's provider schema expects."""
    from airflow_parallelrun import __version__

    return {
        "package-name": "airflow-provider-parallelrun",
        "name": "Parallel Run",
        "description": "Azure ML ParallelRunStep-style batch inference: partition, run mapped mini-batches, "
        "retry, count failures, merge and report.",
        "versions": [__version__],
        "operators": [
            {
                "integration-name": "Parallel Run",
                "python-modules": ["airflow_parallelrun.operators.parallel_run"],
            }
        ],
        "sensors": [
            {"integration-name": "Parallel Run", "python-modules": ["airflow_parallelrun.sensors.new_files"]}
        ],
        # No "connection-types": the hooks read any Connection type's fields and extra.
        "hooks": [
            {
                "integration-name": "Parallel Run",
                "python-modules": ["airflow_parallelrun.hooks.storage", "airflow_parallelrun.hooks.sql"],
            }
        ],
        "triggers": [
            {"integration-name": "Parallel Run", "python-modules": ["airflow_parallelrun.triggers.new_files"]}
        ],
        # The "Parallel run" tab of the DAG run page. Airflow reads this list only with [core]
        # lazy_discover_providers = False; the package's "airflow.plugins" entry point (pyproject.toml)
        # loads the same class in every configuration, as Airflow's own providers do.
        "plugins": [{"name": PLUGIN_NAME, "plugin-class": PLUGIN_CLASS}],
    }
