"""Score a table: a TabularDataset of csv files split by bytes, scored by a saved model.

``prepare`` writes an iris-like table of 20,000 rows over three csv files and trains a model
(once); ``score`` splits the files into 64KB mini-batches, runs ``scripts/tabular_score.py``
on each DataFrame, and merges the returned ``id prediction`` rows in input order.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from parallelrun_examples.settings import data_dir_param

from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

with DAG(
    dag_id="parallelrun_tabular",
    schedule=None,
    catchup=False,
    tags=["parallelrun", "example"],
    params={"data_dir": data_dir_param()},
    doc_md=__doc__,
) as dag:

    @task
    def prepare(params: dict | None = None) -> dict[str, str]:
        """Make the table and the model, if they are not there yet."""
        from parallelrun_examples.data import prepare_examples

        assert params is not None, "Airflow passes the DAG's params to a task that asks for them"
        return prepare_examples(params["data_dir"])

    score = ParallelRunOperator(
        task_id="score",
        inputs=TabularDataset(path="{{ params.data_dir }}/tabular/input", format="csv"),
        output_path="{{ params.data_dir }}/out/tabular/{{ run_id }}",
        config=ParallelRunConfig(
            entry_script="scripts/tabular_score.py",
            mini_batch_size="64KB",
            error_threshold=0,
            process_count_per_node=2,
        ),
        arguments=["--model_path", "{{ params.data_dir }}/tabular/model.joblib"],
    )
    prepare() >> score
