from airflow.sdk import DAG, Asset, CronTriggerTimetable
from pendulum import datetime

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG(
    "score_nightly",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="/data/images/{{ ds }}", pattern="**/*.png"),
        output_path="/data/out/nightly/{{ ds }}",
        output_asset=Asset("scores"),
        resume=True,  # a re-run of the same day reuses what already succeeded
        config=ParallelRunConfig(entry_script="scripts/score.py"),
        arguments=["--model_path", "/data/model.joblib"],
    )
