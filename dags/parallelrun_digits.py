"""Classify digit images: a FileDataset scored by an Azure-style entry script.

``prepare`` writes scikit-learn's bundled digits as PNG files and trains a classifier (once);
``score`` runs ``scripts/digits_score.py`` over mini-batches of 100 images and merges the lines
``"<file name>: <digit>"`` into ``parallel_run_step.txt``.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from parallelrun_examples.settings import data_dir_param, examples_conn_id

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG(
    dag_id="parallelrun_digits",
    schedule=None,
    catchup=False,
    tags=["parallelrun", "example"],
    params={"data_dir": data_dir_param(on_store=True)},
    doc_md=__doc__,
) as dag:

    @task
    def prepare(params: dict | None = None) -> dict[str, str]:
        """Make the digit images and the model, if they are not there yet."""
        from parallelrun_examples.on_store import prepare_examples_at

        assert params is not None, "Airflow passes the DAG's params to a task that asks for them"
        return prepare_examples_at(params["data_dir"])

    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(
            path="{{ params.data_dir }}/digits/images", pattern="**/*.png", conn_id=examples_conn_id()
        ),
        output_path="{{ params.data_dir }}/out/digits/{{ run_id }}",
        output_conn_id=examples_conn_id(),
        config=ParallelRunConfig(
            entry_script="scripts/digits_score.py",
            mini_batch_size="100",
            error_threshold=0,
            run_invocation_timeout=60,
            process_count_per_node=2,
        ),
        # The model is local, also when the data is on a store: prepare says where.
        arguments=["--model_path", "{{ ti.xcom_pull(task_ids='prepare')['digits_model'] }}"],
    )
    prepare() >> score
