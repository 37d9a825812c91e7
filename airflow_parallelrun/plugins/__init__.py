"""The provider's Airflow plugin: a "Parallel run" tab on the DAG run page (see ``parallel_run_plugin``)."""
