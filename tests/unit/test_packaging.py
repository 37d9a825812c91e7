"""What users import and what the wheel carries: public names, ``py.typed``, the UI plugin's files."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import airflow_parallelrun
from airflow_parallelrun.core import steps

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_imports_from_the_package() -> None:
    assert "ClaimLedger" in airflow_parallelrun.__all__
    from airflow_parallelrun import ClaimLedger
    from airflow_parallelrun.core.storage.claims import ClaimLedger as defined

    assert ClaimLedger is defined
    for name in airflow_parallelrun.__all__:
        assert getattr(airflow_parallelrun, name) is not None, name


def test_the_steps_package_exports_the_step_functions_not_their_modules() -> None:
    # A step function shares its module's name; loading the module again must not shadow it.
    for module in ("partition", "run", "aggregate"):
        importlib.import_module(f"airflow_parallelrun.core.steps.{module}")
    for name in steps.__all__:
        assert callable(getattr(steps, name)) and not isinstance(getattr(steps, name), type(steps)), name


@pytest.mark.slow
def test_the_wheel_carries_py_typed(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("airflow_parallelrun", "azureml_user"):
        shutil.copytree(ROOT / package, source / package)
    # An isolated build, as a release is built (the project's setuptools, not the venv's).
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert "airflow_parallelrun/py.typed" in names
    assert "airflow_parallelrun/core/steps/partition.py" in names
    # Azure's import path for EntryScript ships in the same wheel.
    assert "azureml_user/parallel_run.py" in names and "azureml_user/py.typed" in names
    # The UI view's page, and the entry point by which Airflow finds its plugin whatever its settings.
    assert "airflow_parallelrun/plugins/view.html" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    declared = archive.read(entry_points).decode()
    assert "[airflow.plugins]" in declared and "plugins.parallel_run_plugin:ParallelRunPlugin" in declared
