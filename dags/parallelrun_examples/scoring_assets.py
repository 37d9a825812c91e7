"""The assets the scheduled examples produce and consume; one definition, shared by every DAG file.

``SCORES`` is emitted by the scoring DAGs' aggregate task when a run succeeds (its extra holds the
run's counts and merged output URL) and schedules ``parallelrun_report``. ``TABULAR_MODEL`` is
emitted by ``parallelrun_retrain`` when it saves a new model and schedules
``parallelrun_asset_or_time``.
"""

from __future__ import annotations

from airflow.sdk import Asset

SCORES = Asset("parallelrun_scores")
TABULAR_MODEL = Asset("parallelrun_tabular_model")
