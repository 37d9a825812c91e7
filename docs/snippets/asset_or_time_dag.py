from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable
from pendulum import datetime

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG(
    "rescore_reference",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
        assets=[Asset("digits_model")],
    ),
    start_date=datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="/data/reference", pattern="**/*.png"),
        output_path="/data/out/reference/{{ run_id }}",
        config=ParallelRunConfig(entry_script="scripts/score.py"),
        arguments=["--model_path", "/data/model.joblib"],
    )
