"""What an entry script sees of the engine, as Azure ML's ``EntryScript`` offers it.

A script written for Azure's ParallelRunStep changes one line::

    from azureml_user.parallel_run import EntryScript   # Azure
    from airflow_parallelrun import EntryScript          # here
"""

from __future__ import annotations

import logging
import os
import sys

OUTPUT_DIR_ENV = "PARALLELRUN_OUTPUT_DIR"
LOG_DIR_ENV = "PARALLELRUN_LOG_DIR"
WORKING_DIR_ENV = "PARALLELRUN_WORKING_DIR"
LOGGING_LEVEL_ENV = "PARALLELRUN_LOGGING_LEVEL"
MINI_BATCH_ENV = "PARALLELRUN_MINI_BATCH"
# The process id of the task instance whose request a (warm) worker is serving.
TASK_PID_ENV = "PARALLELRUN_TASK_PID"
LOGGER_NAME = "parallelrun.entry_script"


class EntryScript:
    """Give the entry script its logger and folders.

    ``output_dir`` is where a ``summary_only`` script writes its own outputs (they end up under
    the run's ``output_path``); ``log_dir`` is for the script's own log files; ``working_dir`` is
    a scratch folder that lives as long as the worker process.
    """

    @property
    def logger(self) -> logging.Logger:
        logger = logging.getLogger(LOGGER_NAME)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s entry_script: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(os.environ.get(LOGGING_LEVEL_ENV, "INFO").upper())
            logger.propagate = False
        return logger

    @property
    def output_dir(self) -> str:
        return self._folder(OUTPUT_DIR_ENV)

    @property
    def log_dir(self) -> str:
        return self._folder(LOG_DIR_ENV)

    @property
    def working_dir(self) -> str:
        return self._folder(WORKING_DIR_ENV)

    @property
    def mini_batch_id(self) -> str | None:
        """Return the id of the mini-batch being run, or None outside ``run()``."""
        return os.environ.get(MINI_BATCH_ENV) or None

    @staticmethod
    def _folder(env: str) -> str:
        folder = os.environ.get(env)
        if not folder:
            raise RuntimeError(
                f"EntryScript folders exist only inside a parallel run ({env} is not set); "
                "call EntryScript() from init() or run()"
            )
        os.makedirs(folder, exist_ok=True)
        return folder
