from airflow.sdk import DAG, ObjectStoragePath

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("score_object_storage_path", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path=ObjectStoragePath("s3://aws_default@bucket/images"), pattern="**/*.png"),
        output_path=ObjectStoragePath("s3://aws_default@bucket/scores"),
        config=ParallelRunConfig(entry_script="scripts/score.py"),
        arguments=["--model_path", "/data/model.joblib"],
    )
