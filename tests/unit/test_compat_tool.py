"""``tools/compat.py`` (``make test-compat``) refuses an incomplete wheel and a package not from the wheel.

The tool's whole run is CI's (``.ci/run``); these tests check that its two guards can fail.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "compat.py"
MODULES = {"airflow_parallelrun/__init__.py", "airflow_parallelrun/core/execution/pool/__main__.py"}
ENTRY_POINTS = (
    "[apache_airflow_provider]\nprovider_info = airflow_parallelrun.get_provider_info:get_provider_info\n"
)


@functools.cache
def compat() -> Any:
    """Load tools/compat.py (registered first: its dataclass looks its module up by name)."""
    spec = importlib.util.spec_from_file_location("parallelrun_compat_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_wheel(path: Path, files: set[str], entry_points: str = ENTRY_POINTS) -> Path:
    info = "airflow_provider_parallelrun-0.1.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        for name in files:
            zf.writestr(name, "")
        zf.writestr(f"{info}/METADATA", "Name: airflow-provider-parallelrun\nRequires-Python: >=3.11\n")
        zf.writestr(f"{info}/entry_points.txt", entry_points)
    return path


def test_a_complete_wheel_has_no_problems(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", MODULES | {"airflow_parallelrun/py.typed"})
    assert compat().wheel_problems(wheel, MODULES) == []


def test_a_wheel_without_the_worker_module_py_typed_or_entry_point_or_with_tests_is_refused(
    tmp_path: Path,
) -> None:
    files = {"airflow_parallelrun/__init__.py", "tests/test_x.py", "dags/d.py"}
    wheel = make_wheel(tmp_path / "w.whl", files, entry_points="[console_scripts]\n")
    problems = compat().wheel_problems(wheel, MODULES)
    assert problems[:4] == [
        "missing airflow_parallelrun/core/execution/pool/__main__.py",
        "missing airflow_parallelrun/py.typed",
        "carries dags/d.py",
        "carries tests/test_x.py",
    ]
    assert problems[4].startswith("entry_points.txt lacks the apache_airflow_provider entry point")


def test_a_package_imported_from_a_source_folder_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "airflow_parallelrun").mkdir()
    (tmp_path / "airflow_parallelrun" / "__init__.py").write_text("")
    tool = compat()
    with pytest.raises(tool.StageFailed, match="not from the wheel"):
        tool.installed_from(Path(sys.executable).parent.parent, tmp_path)
