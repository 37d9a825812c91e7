"""What Azure ML sets up around an entry script, set up the same way in each worker process.

- ``AZUREML_BI_OUTPUT_PATH``: the folder a batch-endpoint script writes its own outputs to,
  which is ``EntryScript().output_dir`` (they end up under the run's ``output_path``).
- ``AZUREML_MODEL_DIR``: where the run's models are (set by the task that staged them, see
  :mod:`airflow_parallelrun.core.models.staging`).
- ``./azureml-models``: the folder ``azureml.core.Model.get_model_path(name)`` reads offline,
  ``azureml-models/<name>/<version>`` under the working directory, linked to the node's models.

A variable the run's ``environment_variables`` set is left as the run set it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from airflow_parallelrun.core.execution.entry_script import OUTPUT_DIR_ENV

BI_OUTPUT_ENV = "AZUREML_BI_OUTPUT_PATH"
MODEL_DIR_ENV = "AZUREML_MODEL_DIR"
#: The node's staged models (``<name>/<version>/<file or folder>``), linked into the working directory.
MODELS_DIR_ENV = "PARALLELRUN_MODELS_DIR"
#: The folder, under the working directory, where azureml-core's ``Model.get_model_path`` looks.
AZUREML_MODELS = "azureml-models"


def arrange_azureml(run_env: Mapping[str, str]) -> None:
    """Set ``AZUREML_BI_OUTPUT_PATH`` and link ``./azureml-models`` in this worker, as Azure does.

    ``run_env`` is the run's own ``environment_variables``: a value set there wins.
    """
    output_dir = os.environ.get(OUTPUT_DIR_ENV)
    if BI_OUTPUT_ENV not in run_env and output_dir:
        os.environ[BI_OUTPUT_ENV] = output_dir
    root = os.environ.get(MODELS_DIR_ENV)
    if not root:
        return
    link = os.path.join(os.getcwd(), AZUREML_MODELS)
    if os.path.islink(link):
        if os.readlink(link) == root:
            return
        os.unlink(link)
    if not os.path.lexists(link):  # a folder of that name the user made stays theirs
        os.symlink(root, link)
