from airflow.sdk import DAG, CronTriggerTimetable
from pendulum import datetime

from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, SqlDataset, SqlTable

with DAG(
    "score_customers",
    schedule=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=SqlDataset(conn_id="warehouse", table="customers"),
        output=SqlTable(
            conn_id="warehouse", table="customer_scores", key=["customer_id"], if_exists="upsert"
        ),
        output_path="/data/out/customers/{{ run_id }}",  # the run's snapshot, statuses and reports
        config=ParallelRunConfig(
            entry_script="scripts/score_customers.py",
            mini_batch_size="50000 rows",
            output_action="summary_only",  # the table is the output: no merged file
        ),
        arguments=["--model_path", "/data/churn.joblib"],
    )
