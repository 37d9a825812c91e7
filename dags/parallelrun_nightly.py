"""Score each day's table every night at 02:00 UTC; the day's folder comes from the run's logical date.

The run for logical date ``D`` scores ``<data>/tabular/daily/D/*.csv``: a scheduled run has the
cron time as its logical date, a backfill or a ``dag.test(logical_date=...)`` the date given, and a
manual run without a logical date the day it was triggered. ``materialise_day`` makes that day's
example table when nothing was delivered (so the example runs anywhere) and the model when it is
missing; ``score`` splits it into 16KB mini-batches, runs ``scripts/tabular_score.py`` on each and
merges ``id prediction`` rows into ``<data>/out/nightly/D/parallel_run_step.txt``.

A succeeded run emits the ``parallelrun_scores`` asset event with its counts and output URL, which
schedules ``parallelrun_report``. ``resume=True``: a run re-done for the same day (cleared, or a
backfill) reuses the mini-batches that already succeeded while the day's files are unchanged.

``<data>`` is the ``data_dir`` Param: by default the local examples folder, or the deployment's
store folder (``$PARALLELRUN_EXAMPLES_STORE``, reached with ``$PARALLELRUN_EXAMPLES_CONN_ID``) when
one is set, so scheduled runs read and write the store. There ``materialise_day`` uploads the
example day unless the store already holds a delivery for it; the model stays local.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from parallelrun_examples.scoring_assets import SCORES
from parallelrun_examples.settings import data_dir_param, examples_conn_id
from parallelrun_examples.timetables import CronTriggerTimetable
from pendulum import datetime

from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

DATA = "{{ params.data_dir }}"
# A manual run may have no logical date (Airflow 3): then the day it was triggered.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="parallelrun_nightly",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["parallelrun", "example"],
    # Scheduled runs take the default: the store folder when the deployment sets one.
    params={"data_dir": data_dir_param(on_store=True, store_by_default=True)},
    doc_md=__doc__,
) as dag:

    @task
    def materialise_day(day: str, data_dir: str) -> dict[str, str]:
        """Make the day's example input and the model, unless they are there; return where they are."""
        from parallelrun_examples.daily import ensure_tabular_model, materialise_daily_input
        from parallelrun_examples.on_store import local_dir, publish

        model = ensure_tabular_model(local_dir(data_dir))
        folder = materialise_daily_input(local_dir(data_dir), day)
        return {
            "day": publish(data_dir, folder, f"tabular/daily/{day}", unless_delivered=True),
            "model": str(model),
        }

    score = ParallelRunOperator(
        task_id="score",
        inputs=TabularDataset(path=f"{DATA}/tabular/daily/{DAY}", format="csv", conn_id=examples_conn_id()),
        output_path=f"{DATA}/out/nightly/{DAY}",
        output_conn_id=examples_conn_id(),
        config=ParallelRunConfig(
            entry_script="scripts/tabular_score.py",
            mini_batch_size="16KB",
            error_threshold=0,
            process_count_per_node=2,
        ),
        # The model is local, also when the data is on a store: materialise_day says where.
        arguments=["--model_path", "{{ ti.xcom_pull(task_ids='materialise_day')['model'] }}"],
        resume=True,
        output_asset=SCORES,
    )
    materialise_day(DAY, DATA) >> score
