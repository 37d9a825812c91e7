"""The engine stays plain Python: importing every core module loads no ``airflow`` module."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import airflow_parallelrun.core as core


def test_core_imports_no_airflow_module() -> None:
    modules = [m.name for m in pkgutil.walk_packages(core.__path__, prefix="airflow_parallelrun.core.")]
    # Every subpackage is walked, down to its modules.
    for name in ("steps.partition", "steps.run", "steps.aggregate", "spec", "inputs.splitting"):
        assert f"airflow_parallelrun.core.{name}" in modules
    for name in ("execution.worker", "execution.batch_runner", "outputs.parts", "storage.claims"):
        assert f"airflow_parallelrun.core.{name}" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from airflow_parallelrun import EntryScript, FileDataset, ParallelRunConfig, TabularDataset\n"
        "leaked = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "print(leaked)\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"core imported airflow modules: {result.stdout} {result.stderr}"


def test_the_boundary_check_would_see_an_airflow_import() -> None:
    """The check above is only worth something if importing airflow shows in sys.modules."""
    code = "import sys, airflow.sdk; sys.exit(0 if 'airflow' in sys.modules else 1)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
