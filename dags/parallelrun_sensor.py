"""Score new digit images as they arrive: a NewFilesSensor hands exactly the new files to the scoring step.

Drop PNG files anywhere under ``<data_dir>/incoming/sensor/``. ``wait_for_images`` defers to the
triggerer until images appear that no earlier run has taken and that have kept their size for 5
seconds, claims them (at most 1,000 per run) and returns their paths; ``score`` classifies exactly
those images with ``scripts/digits_score.py`` and writes ``"<file name>: <digit>"`` lines to
``<data_dir>/out/sensor/<run id>/parallel_run_step.txt``. A file is scored by one run only, however
many runs overlap; a failed run keeps its files (clear its tasks to score them again).

``data_dir`` may be the deployment's store folder (``$PARALLELRUN_EXAMPLES_STORE``, reached with
the Connection ``$PARALLELRUN_EXAMPLES_CONN_ID``): the sensor then watches
``<data_dir>/incoming/sensor/`` on the store, keeps its claims there, and the output goes there
too; the model stays in the local examples folder.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task
from parallelrun_examples.settings import data_dir_param, examples_conn_id

from airflow_parallelrun import FileDataset, NewFilesSensor, ParallelRunConfig, ParallelRunOperator

with DAG(
    dag_id="parallelrun_sensor",
    schedule=None,
    catchup=False,
    tags=["parallelrun", "example"],
    params={"data_dir": data_dir_param(on_store=True)},
    doc_md=__doc__,
) as dag:

    @task
    def prepare(params: dict | None = None) -> dict[str, str]:
        """Make the model, if it is not there yet (locally, also when the data is on a store)."""
        from parallelrun_examples.data import prepare_examples
        from parallelrun_examples.on_store import local_dir

        assert params is not None, "Airflow passes the DAG's params to a task that asks for them"
        return prepare_examples(local_dir(params["data_dir"]))

    wait_for_images = NewFilesSensor(
        task_id="wait_for_images",
        path="{{ params.data_dir }}/incoming/sensor",
        pattern="**/*.png",
        conn_id=examples_conn_id(),
        settle_seconds=5,
        poke_interval=5,
        max_files=1000,
        timeout=timedelta(hours=6),
    )
    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(files=wait_for_images.output, conn_id=examples_conn_id()),
        output_path="{{ params.data_dir }}/out/sensor/{{ run_id }}",
        output_conn_id=examples_conn_id(),
        config=ParallelRunConfig(
            entry_script="scripts/digits_score.py",
            mini_batch_size="100",
            error_threshold=0,
            process_count_per_node=2,
        ),
        # The model is local, also when the data is on a store: prepare says where.
        arguments=["--model_path", "{{ ti.xcom_pull(task_ids='prepare')['digits_model'] }}"],
    )
    prepare() >> wait_for_images
