"""Score digit images when they land: an AssetWatcher on an incoming folder starts a run per batch of files.

``NewFilesTrigger`` runs in the triggerer (no task holds a worker slot while nothing happens). It
polls ``<examples dir>/incoming/events/`` every 5 seconds, claims the PNG files that have kept their
size for 5 seconds and that no one has taken, and records an event on the asset
``parallelrun_incoming_images`` whose extra holds their paths. Each event schedules this DAG, whose
``score`` step classifies exactly the files of the events that triggered the run
(``FileDataset(files=TRIGGERING_FILES)``). A file fires once, even when the triggerer restarts.

The watched folder is fixed when the DAG file is parsed (a trigger has no run, so no Params):
under the deployment's store folder ``$PARALLELRUN_EXAMPLES_STORE`` when one is set (reached with
the Connection ``$PARALLELRUN_EXAMPLES_CONN_ID``; the claims and the output go there too), else
under ``$PARALLELRUN_EXAMPLES_DIR``, else ``$AIRFLOW_HOME/parallelrun-examples``. The model stays
in the local examples folder.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, AssetWatcher, task
from parallelrun_examples.settings import examples_conn_id, examples_dir, examples_store

from airflow_parallelrun import (
    TRIGGERING_FILES,
    FileDataset,
    NewFilesTrigger,
    ParallelRunConfig,
    ParallelRunOperator,
)

DATA_DIR = examples_store() or examples_dir()
MODELS_DIR = examples_dir()

incoming_images = Asset(
    "parallelrun_incoming_images",
    watchers=[
        AssetWatcher(
            name="parallelrun_incoming_images_watcher",
            trigger=NewFilesTrigger(
                path=f"{DATA_DIR}/incoming/events",
                pattern="**/*.png",
                conn_id=examples_conn_id(),
                settle_seconds=5,
                poke_interval=5,
                max_files=1000,
            ),
        )
    ],
)

with DAG(
    dag_id="parallelrun_event_driven",
    schedule=[incoming_images],
    catchup=False,
    tags=["parallelrun", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def prepare() -> dict[str, str]:
        """Make the model, if it is not there yet."""
        from parallelrun_examples.data import prepare_examples

        return prepare_examples(MODELS_DIR)

    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(files=TRIGGERING_FILES, conn_id=examples_conn_id()),
        output_path=f"{DATA_DIR}/out/events/{{{{ run_id }}}}",
        output_conn_id=examples_conn_id(),
        config=ParallelRunConfig(
            entry_script="scripts/digits_score.py",
            mini_batch_size="100",
            error_threshold=0,
            process_count_per_node=2,
        ),
        arguments=["--model_path", f"{MODELS_DIR}/digits/model.joblib"],
    )
    prepare() >> score
