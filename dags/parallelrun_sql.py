"""Score every customer nightly: the customers table in, churn scores upserted into a scores table.

Every night at 03:00 UTC, ``prepare`` makes the example's data where it is missing (the churn model,
and a ``customers`` table of 10,000 rows), then ``score`` reads the ``customers`` table once, as one
consistent snapshot (``SqlDataset``), splits it into mini-batches of 2,000 rows, runs
``scripts/customers_score.py`` on each, and upserts ``customer_id, score`` into ``customer_scores``
(``SqlTable(key=["customer_id"], if_exists="upsert")``): each customer has one row there, which
every run updates, exactly once even when a task is retried or killed.

The database is the **Database connection** Param (``conn_id``): empty, the examples' SQLite
database, a file in the examples folder that this example creates (nothing to set up); or the id of
an Airflow Connection of type ``postgres``, ``mysql`` or ``sqlite`` (for example one defined as
``AIRFLOW_CONN_WAREHOUSE='postgresql://scorer:...@db:5432/analytics'``), where ``prepare`` creates
the ``customers`` table if it does not exist and never touches it if it does. See docs/sql.md.

The run's summary and report go to ``<data_dir>/out/sql/<run id>/`` (the ``data_dir`` Param):
the local examples folder, or the deployment's store folder (``$PARALLELRUN_EXAMPLES_STORE``,
through ``$PARALLELRUN_EXAMPLES_CONN_ID``) when one is set, which scheduled runs then take. The
SQLite database and the model stay in the local examples folder.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task
from parallelrun_examples.customers import examples_database_url
from parallelrun_examples.settings import data_dir_param, examples_conn_id, examples_dir
from parallelrun_examples.timetables import CronTriggerTimetable
from pendulum import datetime

from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, SqlDataset, SqlTable

DATA = examples_dir()
#: The examples' SQLite database: used when the conn_id Param is empty.
EXAMPLES_DB = examples_database_url(DATA)
CONN_ID = "{{ params.conn_id }}"

with DAG(
    dag_id="parallelrun_sql",
    schedule=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["parallelrun", "example"],
    doc_md=__doc__,
    params={
        # Scheduled runs take the default: the store folder when the deployment sets one.
        "data_dir": data_dir_param(on_store=True, store_by_default=True),
        "conn_id": Param(
            "",
            type="string",
            title="Database connection",
            description=(
                "An Airflow Connection id (types postgres, mysql, sqlite) holding the customers table; "
                f"empty: the examples' SQLite database ({EXAMPLES_DB})."
            ),
            maxLength=250,
            pattern=r"^[A-Za-z0-9_.-]*$",
        ),
    },
) as dag:

    @task
    def prepare(params: dict | None = None) -> int:
        """Train the model and make the customers table, where they are missing; return the table's rows."""
        from parallelrun_examples.customers import ensure_customers_model, ensure_customers_table

        from airflow_parallelrun.hooks.sql import sqlalchemy_url

        assert params is not None, "Airflow passes the DAG's params to a task that asks for them"
        ensure_customers_model(DATA)
        url = sqlalchemy_url(params["conn_id"]) if params["conn_id"] else EXAMPLES_DB
        return ensure_customers_table(url, "customers")

    score = ParallelRunOperator(
        task_id="score",
        inputs=SqlDataset(conn_id=CONN_ID, url=EXAMPLES_DB, table="customers"),
        output=SqlTable(
            conn_id=CONN_ID, url=EXAMPLES_DB, table="customer_scores", key=["customer_id"], if_exists="upsert"
        ),
        output_path="{{ params.data_dir }}/out/sql/{{ run_id }}",
        output_conn_id=examples_conn_id(),
        config=ParallelRunConfig(
            entry_script="scripts/customers_score.py",
            mini_batch_size="2000 rows",
            error_threshold=0,
            process_count_per_node=2,
            output_action="summary_only",
        ),
        arguments=["--model_path", f"{DATA}/customers/model.joblib"],
    )
    prepare() >> score
