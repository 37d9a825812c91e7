"""Score a table: a TabularDataset of csv files split by bytes, scored by a saved model.

``prepare`` writes an iris-like table of 20,000 rows over three csv files and trains a model
(once); ``score`` splits the files into 64KB mini-batches, runs ``scripts/tabular_score.py``
on each DataFrame, and merges the returned ``id prediction`` rows in input order.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from parallelrun_examples.settings import data_dir_param, examples_conn_id

from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

with DAG(
    dag_id="parallelrun_tabular",
    schedule=None,
    catchup=False,
    tags=["parallelrun", "example"],
    params={"data_dir": data_dir_param(on_store=True)},
    doc_md=__doc__,
) as dag:

    @task
    def prepare(params: dict | None = None) -> dict[str, str]:
        """Make the table and the model, if they are not there yet."""
        from parallelrun_examples.on_store import prepare_examples_at

        assert params is not None, "Airflow passes the DAG's params to a task that asks for them"
        return prepare_examples_at(params["data_dir"])

    score = ParallelRunOperator(
        task_id="score",
        inputs=TabularDataset(
            path="{{ params.data_dir }}/tabular/input", format="csv", conn_id=examples_conn_id()
        ),
        output_path="{{ params.data_dir }}/out/tabular/{{ run_id }}",
        output_conn_id=examples_conn_id(),
        config=ParallelRunConfig(
            entry_script="scripts/tabular_score.py",
            mini_batch_size="64KB",
            error_threshold=0,
            process_count_per_node=2,
        ),
        # The model is local, also when the data is on a store: prepare says where.
        arguments=["--model_path", "{{ ti.xcom_pull(task_ids='prepare')['tabular_model'] }}"],
    )
    prepare() >> score
