"""Python environments for tests whose workers run in another interpreter, built once and kept.

The one helper for such environments: built by the package's own code (``venvs.venv_python``:
a venv, then pip from the package index, under a lock, with a marker written last so a killed
build is built again) under ``<repo>/.venv/test-envs`` or ``$PARALLELRUN_TEST_ENVS``, so later
test sessions reuse them. A test that needs a library in its workers' interpreter writes::

    from tests.python_envs import AZUREML_ENV, python_with

    config = ParallelRunConfig(entry_script=..., python=python_with(AZUREML_ENV))
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_parallelrun.core.execution.interpreters import check_interpreter
from airflow_parallelrun.core.execution.venvs import venv_python

REPO = Path(__file__).resolve().parent.parent
TEST_ENVS = Path(os.environ.get("PARALLELRUN_TEST_ENVS") or REPO / ".venv" / "test-envs")

#: What the tests of per-step environments install: a pandas 2, where Airflow's interpreter has 3.
PANDAS_2 = ("pandas==2.2.*",)

#: The real azureml-core from the package index, with what Azure's example scripts import beside it
#: (scikit-learn at the version that pickles the tests' models, Pillow, and the pandas 2 they were
#: written for). One environment serves every test of azureml-core.
AZUREML_ENV = ("azureml-core==1.61.0.post4", "pandas==2.2.*", "scikit-learn==1.9.1", "pillow==13.0.0")


def python_with(requirements: Sequence[str]) -> str:
    """Return the interpreter of a kept environment with ``requirements`` and what workers need."""
    return venv_python(tuple(requirements), check_interpreter(sys.executable), str(TEST_ENVS))
