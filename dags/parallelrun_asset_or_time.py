"""Re-score the reference table when the model changes, and every night at 03:00 UTC at the latest.

``AssetOrTimeSchedule`` combines the two: a ``parallelrun_tabular_model`` event (emitted by
``parallelrun_retrain``) starts a run at once, and the cron timetable starts one at 03:00 UTC
whether or not the model changed. ``prepare`` makes the 3,000-row reference table and the model
when they are missing; ``score`` splits the table into mini-batches of 1,000 rows, runs
``scripts/tabular_score.py`` on each and merges ``id prediction`` rows into
``<data>/out/rescore/<run id>/parallel_run_step.txt``. Its ``parallelrun_scores`` event feeds
``parallelrun_report`` like the nightly DAG's.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from parallelrun_examples.scoring_assets import SCORES, TABULAR_MODEL
from parallelrun_examples.settings import examples_dir
from parallelrun_examples.timetables import AssetOrTimeSchedule, CronTriggerTimetable
from pendulum import datetime

from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

DATA = examples_dir()
REFERENCE_ROWS = 3000

with DAG(
    dag_id="parallelrun_asset_or_time",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=[TABULAR_MODEL]
    ),
    start_date=datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["parallelrun", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def prepare() -> dict[str, str]:
        """Make the reference table and the model, if they are not there yet."""
        from pathlib import Path

        from parallelrun_examples.daily import ensure_tabular_model
        from parallelrun_examples.data import make_tabular_table

        reference = Path(DATA) / "tabular" / "reference"
        if not all((reference / f"part-{k:03d}.csv").is_file() for k in range(2)):
            make_tabular_table(reference, rows=REFERENCE_ROWS, files=2, fmt="csv")
        return {"reference": str(reference), "model": str(ensure_tabular_model(DATA))}

    score = ParallelRunOperator(
        task_id="score",
        inputs=TabularDataset(path=f"{DATA}/tabular/reference", format="csv"),
        output_path=f"{DATA}/out/rescore/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script="scripts/tabular_score.py",
            mini_batch_size="1000 rows",
            error_threshold=0,
            process_count_per_node=2,
        ),
        arguments=["--model_path", f"{DATA}/tabular/model.joblib"],
        output_asset=SCORES,
    )
    prepare() >> score
