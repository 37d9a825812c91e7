"""``from azureml_user.parallel_run import EntryScript``: the engine's own ``EntryScript``, re-exported.

The same class, not a copy: its ``logger`` (named ``parallelrun.entry_script``, at the run's
``logging_level``), ``output_dir``, ``log_dir``, ``working_dir`` and ``mini_batch_id`` behave as
``airflow_parallelrun.EntryScript``'s do. Importing it loads no Airflow, as the worker needs.
"""

from __future__ import annotations

from airflow_parallelrun.core.execution.entry_script import EntryScript

__all__ = ["EntryScript"]
