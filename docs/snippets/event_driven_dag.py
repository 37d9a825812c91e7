from airflow.sdk import DAG, Asset, AssetWatcher

from airflow_parallelrun import (
    TRIGGERING_FILES,
    FileDataset,
    NewFilesTrigger,
    ParallelRunConfig,
    ParallelRunOperator,
)

incoming = Asset(
    "incoming_images",
    watchers=[
        AssetWatcher(
            name="incoming_images_watcher",
            trigger=NewFilesTrigger(
                path="/data/incoming", pattern="**/*.png", settle_seconds=10, poke_interval=30
            ),
        )
    ],
)

with DAG("score_incoming", schedule=[incoming]) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(files=TRIGGERING_FILES),
        output_path="/data/out/{{ run_id }}",
        config=ParallelRunConfig(entry_script="scripts/score.py"),
        arguments=["--model_path", "/data/model.joblib"],
    )
