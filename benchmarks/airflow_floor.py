"""Airflow's own floor for workload (f): a DAG of our run's shape whose three tasks do nothing.

The ``airflow-floor`` contender (``benchmarks/contenders.py``) triggers this DAG on an Airflow set
up as ``ours-scheduler``'s, with the same settings and DAG files, by the same REST call, and times
it the same way, from the trigger to the DAG run's ``end_date``. Its tasks are ``@task`` Python
callables (an ``EmptyOperator`` never runs: the scheduler marks it success itself), in a task
group named as ours (``score``), with the dependencies, mapping, trigger rule and run-task limit
of ours: ``partition`` returns a one-element list, ``run`` is mapped over it, ``aggregate`` runs
``all_done``. What it takes is what Airflow takes for a three-step run with one mini-batch, and
``ours-scheduler`` minus it is what our operator adds.

The DAG file imports nothing of ours, so its tasks pay Airflow's imports only.
"""

from __future__ import annotations

DAG_ID = "parallelrun_bench_airflow_floor"

#: The run tasks' ``max_active_tis_per_dagrun`` in ours: ``max_active_run_tasks`` of the benchmark's
#: config (2 processes, warm workers on: 2 x 2).
MAX_ACTIVE_RUN_TASKS = 4

#: What every benchmark DAG opens with, ours and the floor's: the same DAG arguments and Params
#: (the run's paths come in as its conf). A ``str.format`` template of ``dag_id``.
DAG_OPENING = """\
with DAG(
    dag_id="{dag_id}",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params={{name: Param("", type="string") for name in ("input", "output", "model", "counts")}},
) as dag:
"""

DAG_SOURCE = (
    '''"""Airflow's floor for workload (f), written by benchmarks/ (python -m benchmarks): no-op tasks."""

from airflow.sdk import DAG, Param, TaskGroup, task

'''
    + DAG_OPENING.format(dag_id=DAG_ID)
    + f"""    with TaskGroup(group_id="score"):

        @task
        def partition() -> list[dict[str, int]]:
            return [{{"index": 0}}]

        @task(max_active_tis_per_dagrun={MAX_ACTIVE_RUN_TASKS})
        def run(mini_batch: dict[str, int]) -> None:
            return None

        @task(trigger_rule="all_done")
        def aggregate() -> None:
            return None

        run.expand(mini_batch=partition()) >> aggregate()
"""
)
