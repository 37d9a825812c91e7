from airflow.sdk import DAG

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("score_s3", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="s3://bucket/images", pattern="**/*.png", conn_id="images_store"),
        output_path="s3://bucket/scores/{{ run_id }}",
        output_conn_id="scores_store",
        config=ParallelRunConfig(entry_script="scripts/score.py"),
        arguments=["--model_path", "/data/model.joblib"],
    )
