"""The layout of core/execution: one concept per module, small modules, no private names across modules.

The pool is a package of its protocol, client, server and leftovers sweep; what other modules
use of it is re-exported by ``pool/__init__.py`` (test_pool.py checks that the pool process
still runs as ``python -m airflow_parallelrun.core.execution.pool``).
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_parallelrun

PACKAGE = Path(airflow_parallelrun.__file__).parent
EXECUTION = PACKAGE / "core" / "execution"
# The repository's tool, run on the package as imported (from the wheel in `make test-compat`).
TOOL = Path(__file__).resolve().parents[2] / "tools" / "long_functions.py"


def private_imports(root: Path) -> list[str]:
    """Return ``module: name`` for every private name a module imports from this package."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("airflow_parallelrun"):
                found += [
                    f"{path.relative_to(root)}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    assert private_imports(PACKAGE) == []


def test_the_private_import_check_sees_one(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from airflow_parallelrun.core.execution.runner import _LIVE\n")
    assert private_imports(tmp_path) == ["a.py: from airflow_parallelrun.core.execution.runner import _LIVE"]


@pytest.mark.slow
def test_execution_modules_and_functions_stay_small() -> None:
    spec = importlib.util.spec_from_file_location("long_functions", TOOL)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.report([str(EXECUTION)], 400, 50) == []
    # The rest of the package too; the task group's __init__ is 60 lines, 16 of them its signature.
    over = [line.split(": ", 1)[1] for line in tool.report([str(PACKAGE)], 400, 50)]
    assert over == ["ParallelRunOperator.__init__ 60 lines"]
    # The limits are checked, not just the file list: a tighter one finds the longest function.
    assert any("run_one" in line for line in tool.report([str(EXECUTION / "worker.py")], 400, 30))


def test_the_pool_package_exports_what_other_modules_use_and_loads_no_server() -> None:
    code = (
        "import sys\n"
        "from airflow_parallelrun.core.execution.pool import (\n"
        "    PoolSpec, PoolUnavailable, lease_worker, stop_pools, sweep_leftovers, warm_pool)\n"
        "assert 'airflow_parallelrun.core.execution.pool.server' not in sys.modules\n"
        "print(sweep_leftovers.__module__, lease_worker.__module__, PoolSpec.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "airflow_parallelrun.core.execution.pool.leftovers",
        "airflow_parallelrun.core.execution.pool.client",
        "airflow_parallelrun.core.execution.pool.protocol",
    ]
