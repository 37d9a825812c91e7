"""The three steps of a run, one module each: partition, run, aggregate."""

# Plain imports, not lazy ones: each function shares its module's name, and only an import here,
# after its module has loaded, makes ``steps.partition`` the function rather than the module.
from airflow_parallelrun.core.execution.batch_runner import start_warm_workers
from airflow_parallelrun.core.steps.aggregate import aggregate
from airflow_parallelrun.core.steps.partition import new_run_key, pack, partition
from airflow_parallelrun.core.steps.run import run_mini_batch, run_mini_batches

__all__ = [
    "aggregate",
    "new_run_key",
    "pack",
    "partition",
    "run_mini_batch",
    "run_mini_batches",
    "start_warm_workers",
]
