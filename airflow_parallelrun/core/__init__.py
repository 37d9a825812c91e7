"""The plain-Python engine: partitioning, the entry-script runner, outputs, counting, reports.

Nothing here imports Airflow; a test enforces it.
"""
