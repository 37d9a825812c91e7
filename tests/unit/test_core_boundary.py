"""The engine stays plain Python: importing every core module loads no ``airflow`` module, and core
modules import each other in no circle (tools/import_cycles.py)."""

from __future__ import annotations

import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


@pytest.mark.slow
def test_the_boundary_check_would_see_an_airflow_import() -> None:
    """The check above is only worth something if importing airflow shows in sys.modules."""
    code = "import sys, airflow.sdk; sys.exit(0 if 'airflow' in sys.modules else 1)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def _import_cycles_tool() -> Any:
    path = Path(__file__).resolve().parents[2] / "tools" / "import_cycles.py"
    spec = importlib.util.spec_from_file_location("import_cycles", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_core_modules_import_each_other_in_no_circle() -> None:
    tool = _import_cycles_tool()
    graph = tool.import_graph(Path(core.__file__).parent)
    assert "airflow_parallelrun.core.steps.aggregate" in graph
    assert "airflow_parallelrun.core.outputs.counting" in graph["airflow_parallelrun.core.steps.aggregate"]
    assert tool.cycles(graph) == []


def test_the_circle_check_sees_a_circle_of_types_and_a_deferred_one_only_when_asked(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n"
    )
    (package / "c.py").write_text("import pkg.d\n")
    (package / "d.py").write_text("def f():\n    from . import c\n")
    tool = _import_cycles_tool()
    assert tool.cycles(tool.import_graph(package)) == [["pkg.a", "pkg.sub.b"]]
    assert tool.cycles(tool.import_graph(package, deferred=True)) == [
        ["pkg.a", "pkg.sub.b"],
        ["pkg.c", "pkg.d"],
    ]
    assert tool.main([str(package)]) == 1
