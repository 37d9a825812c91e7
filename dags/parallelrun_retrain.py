"""Retrain the tabular model and announce it: the ``parallelrun_tabular_model`` asset event.

Trigger it by hand (or from a training pipeline); its event starts ``parallelrun_asset_or_time``,
which re-scores the reference table with the new model without waiting for its nightly slot. The
event's extra names the saved model and its SHA-256, so a consumer can tell which model it got.

Its only data is the model, and the model stays in the local examples folder also when the other
examples run on the deployment's store: the entry scripts load a model from a local path, as on
Azure ML. So this example has no ``data_dir`` to point at a store.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task
from parallelrun_examples.scoring_assets import TABULAR_MODEL
from parallelrun_examples.settings import examples_dir

DATA = examples_dir()

with DAG(
    dag_id="parallelrun_retrain",
    schedule=None,
    catchup=False,
    tags=["parallelrun", "example"],
    doc_md=__doc__,
) as dag:

    @task(outlets=[TABULAR_MODEL])
    def retrain(outlet_events: Any = None) -> dict[str, str]:
        """Train the model, save it over the old one, and put its path and digest in the asset event."""
        import hashlib

        from parallelrun_examples.data import train_tabular_model

        path = train_tabular_model(f"{DATA}/tabular/model.joblib")
        extra = {"model_path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        outlet_events[TABULAR_MODEL].extra = extra
        return extra

    retrain()
