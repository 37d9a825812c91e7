from airflow.sdk import DAG

from airflow_parallelrun import FileDataset, NewFilesSensor, ParallelRunConfig, ParallelRunOperator

with DAG("score_new_files", schedule=None) as dag:
    wait = NewFilesSensor(
        task_id="wait",
        path="/data/incoming",
        pattern="**/*.png",
        settle_seconds=10,
        max_files=1000,
        conn_id=None,
    )
    wait >> ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(files=wait.output),
        output_path="/data/out/{{ run_id }}",
        config=ParallelRunConfig(entry_script="scripts/score.py"),
        arguments=["--model_path", "/data/model.joblib"],
    )
