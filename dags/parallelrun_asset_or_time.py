"""Re-score the reference table when the model changes, and every night at 03:00 UTC at the latest.

``AssetOrTimeSchedule`` combines the two: a ``parallelrun_tabular_model`` event (emitted by
``parallelrun_retrain``) starts a run at once, and the cron timetable starts one at 03:00 UTC
whether or not the model changed. ``prepare`` makes the 3,000-row reference table and the model
when they are missing; ``score`` splits the table into mini-batches of 1,000 rows, runs
``scripts/tabular_score.py`` on each and merges ``id prediction`` rows into
``<data>/out/rescore/<run id>/parallel_run_step.txt``. Its ``parallelrun_scores`` event feeds
``parallelrun_report`` like the nightly DAG's.

``<data>`` is the ``data_dir`` Param: the local examples folder, or the deployment's store folder
(``$PARALLELRUN_EXAMPLES_STORE``, through ``$PARALLELRUN_EXAMPLES_CONN_ID``) when one is set, as
for ``parallelrun_nightly``; ``prepare`` then uploads the table, and the model stays local.
"""

from __future__ import annotations

from airflow.sdk import DAG, task
from parallelrun_examples.scoring_assets import SCORES, TABULAR_MODEL
from parallelrun_examples.settings import data_dir_param, examples_conn_id
from parallelrun_examples.timetables import AssetOrTimeSchedule, CronTriggerTimetable
from pendulum import datetime

from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

DATA = "{{ params.data_dir }}"
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
    # Scheduled runs take the default: the store folder when the deployment sets one.
    params={"data_dir": data_dir_param(on_store=True, store_by_default=True)},
    doc_md=__doc__,
) as dag:

    @task
    def prepare(params: dict | None = None) -> dict[str, str]:
        """Make the reference table and the model, if they are not there yet."""
        from pathlib import Path

        from parallelrun_examples.daily import ensure_tabular_model
        from parallelrun_examples.data import make_tabular_table
        from parallelrun_examples.on_store import local_dir, publish

        assert params is not None, "Airflow passes the DAG's params to a task that asks for them"
        local = local_dir(params["data_dir"])
        reference = Path(local) / "tabular" / "reference"
        if not all((reference / f"part-{k:03d}.csv").is_file() for k in range(2)):
            make_tabular_table(reference, rows=REFERENCE_ROWS, files=2, fmt="csv")
        return {
            "reference": publish(params["data_dir"], reference, "tabular/reference"),
            "model": str(ensure_tabular_model(local)),
        }

    score = ParallelRunOperator(
        task_id="score",
        inputs=TabularDataset(path=f"{DATA}/tabular/reference", format="csv", conn_id=examples_conn_id()),
        output_path=f"{DATA}/out/rescore/{{{{ run_id }}}}",
        output_conn_id=examples_conn_id(),
        config=ParallelRunConfig(
            entry_script="scripts/tabular_score.py",
            mini_batch_size="1000 rows",
            error_threshold=0,
            process_count_per_node=2,
        ),
        # The model is local, also when the data is on a store: prepare says where.
        arguments=["--model_path", "{{ ti.xcom_pull(task_ids='prepare')['model'] }}"],
        output_asset=SCORES,
    )
    prepare() >> score
