"""Run a pool: ``python -m airflow_parallelrun.core.execution.pool SOCKET``, its spec on stdin."""

from airflow_parallelrun.core.execution.pool.server import main

if __name__ == "__main__":  # importing this module (walking the package, say) starts nothing
    main()
