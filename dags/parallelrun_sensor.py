"""Score new digit images as they arrive: a NewFilesSensor hands exactly the new files to the scoring step.

Drop PNG files anywhere under ``<data_dir>/incoming/sensor/``. ``wait_for_images`` defers to the
triggerer until images appear that no earlier run has taken and that have kept their size for 5
seconds, claims them (at most 1,000 per run) and returns their paths; ``score`` classifies exactly
those images with ``scripts/digits_score.py`` and writes ``"<file name>: <digit>"`` lines to
``<data_dir>/out/sensor/<run id>/parallel_run_step.txt``. A file is scored by one run only, however
many runs overlap; a failed run keeps its files (clear its tasks to score them again).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task
from parallelrun_examples.settings import data_dir_param

from airflow_parallelrun import FileDataset, NewFilesSensor, ParallelRunConfig, ParallelRunOperator

with DAG(
    dag_id="parallelrun_sensor",
    schedule=None,
    catchup=False,
    tags=["parallelrun", "example"],
    params={"data_dir": data_dir_param()},
    doc_md=__doc__,
) as dag:

    @task
    def prepare(params: dict | None = None) -> dict[str, str]:
        """Make the model, if it is not there yet."""
        from parallelrun_examples.data import prepare_examples

        assert params is not None, "Airflow passes the DAG's params to a task that asks for them"
        return prepare_examples(params["data_dir"])

    wait_for_images = NewFilesSensor(
        task_id="wait_for_images",
        path="{{ params.data_dir }}/incoming/sensor",
        pattern="**/*.png",
        settle_seconds=5,
        poke_interval=5,
        max_files=1000,
        timeout=timedelta(hours=6),
    )
    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(files=wait_for_images.output),
        output_path="{{ params.data_dir }}/out/sensor/{{ run_id }}",
        config=ParallelRunConfig(
            entry_script="scripts/digits_score.py",
            mini_batch_size="100",
            error_threshold=0,
            process_count_per_node=2,
        ),
        arguments=["--model_path", "{{ params.data_dir }}/digits/model.joblib"],
    )
    prepare() >> wait_for_images
