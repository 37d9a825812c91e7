"""Azure ML ParallelRunStep-style batch inference for Apache Airflow 3.

Names load on first use, so an entry script's worker process that imports ``EntryScript``
does not pay for importing Airflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ParallelRunOperator": "airflow_parallelrun.operators.parallel_run",
    "ParallelRunConfig": "airflow_parallelrun.core.config",
    "FileDataset": "airflow_parallelrun.core.inputs.datasets",
    "TabularDataset": "airflow_parallelrun.core.inputs.datasets",
    "SqlDataset": "airflow_parallelrun.core.sql.source",
    "EntryScript": "airflow_parallelrun.core.execution.entry_script",
    "ParallelRunError": "airflow_parallelrun.core.errors",
    "ConfigError": "airflow_parallelrun.core.errors",
    "NewFilesSensor": "airflow_parallelrun.sensors.new_files",
    "NewFilesTrigger": "airflow_parallelrun.triggers.new_files",
    "TRIGGERING_FILES": "airflow_parallelrun.triggers.new_files",
    "ClaimLedger": "airflow_parallelrun.core.storage.claims",
    "SqlTable": "airflow_parallelrun.core.sql.sink",
}

__all__ = [
    "TRIGGERING_FILES",
    "ClaimLedger",
    "ConfigError",
    "EntryScript",
    "FileDataset",
    "NewFilesSensor",
    "NewFilesTrigger",
    "ParallelRunConfig",
    "ParallelRunError",
    "ParallelRunOperator",
    "SqlDataset",
    "SqlTable",
    "TabularDataset",
    "__version__",
]

if TYPE_CHECKING:
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.errors import ConfigError, ParallelRunError
    from airflow_parallelrun.core.execution.entry_script import EntryScript
    from airflow_parallelrun.core.inputs.datasets import FileDataset, TabularDataset
    from airflow_parallelrun.core.sql.sink import SqlTable
    from airflow_parallelrun.core.sql.source import SqlDataset
    from airflow_parallelrun.core.storage.claims import ClaimLedger
    from airflow_parallelrun.operators.parallel_run import ParallelRunOperator
    from airflow_parallelrun.sensors.new_files import NewFilesSensor
    from airflow_parallelrun.triggers.new_files import TRIGGERING_FILES, NewFilesTrigger


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_parallelrun' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
