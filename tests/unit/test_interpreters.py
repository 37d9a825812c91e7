"""Workers in another interpreter: the fields' checks, the interpreter's check, a real worker in a bare venv.

A virtual environment made with ``--without-pip`` has the standard library only: the workers of a
FileDataset run with text output need nothing more, which is the smallest set this proves.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ConfigError, WorkerEnvironmentError
from airflow_parallelrun.core.execution.interpreters import check_interpreter, worker_needs
from airflow_parallelrun.core.execution.pool import lease_worker
from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings
from airflow_parallelrun.core.execution.venvs import worker_python
from airflow_parallelrun.core.inputs.minibatch import MiniBatch, TabularPiece
from tests.unit.test_pool import batch, make_spec, pool_dir  # noqa: F401 (fixtures)

WHO = """
import os, sys
from airflow_parallelrun import EntryScript

def run(mini_batch):
    EntryScript().logger.info("scoring %d files", len(mini_batch))
    return [f"{os.path.basename(p)} {sys.executable} {'pandas' in sys.modules}" for p in mini_batch]
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtual environment with nothing but the standard library (no pip, no pandas)."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return str(folder / "bin" / "python")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"requirements": "pandas==2.2.3"}, "give a list of pip requirement specifiers"),
        ({"requirements": ["pandas==2.2.3", "--index-url=http://x"]}, "pip options are not taken here"),
        ({"requirements": [""]}, "not a requirement specifier"),
        ({"python": ""}, "python='' is invalid: give a path"),
        ({"venv_cache_path": "/tmp/envs"}, "venv_cache_path='/tmp/envs' is set but requirements is empty"),
    ],
)
def test_bad_environment_fields_are_refused_with_what_to_give(fields, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        ParallelRunConfig(entry_script="s.py", **fields)


def test_python_and_requirements_reach_the_run_tasks_through_the_manifest_header() -> None:
    python, requirements = "/opt/py/bin/python", ["pandas==2.2.*"]
    config = ParallelRunConfig(entry_script="s.py", python=python, requirements=requirements)
    back = ParallelRunConfig.from_header(config.to_header())
    assert (back.python, back.requirements, back.venv_cache_path) == (python, ("pandas==2.2.*",), None)


def test_what_a_worker_needs_follows_the_input_and_the_part_format() -> None:
    assert worker_needs(table_format=None, part_format="text") == ()
    table = ("fsspec", "pandas", "pyarrow", "tenacity")
    assert worker_needs(table_format="parquet", part_format="text") == table
    assert worker_needs(table_format=None, part_format="rows") == ("pandas", "pyarrow")


def test_an_interpreter_that_is_missing_or_not_python_is_refused_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(WorkerEnvironmentError, match=r"python='/no/such/bin/python' does not exist on this"):
        check_interpreter("/no/such/bin/python")
    not_python = tmp_path / "python"
    not_python.write_text("#!/bin/sh\necho hello\n")
    not_python.chmod(0o755)
    with pytest.raises(WorkerEnvironmentError, match="did not run as a Python interpreter") as caught:
        check_interpreter(str(not_python))
    assert "hello" in caught.value.traceback
    not_python.chmod(0o644)
    with pytest.raises(WorkerEnvironmentError, match="is not executable"):
        check_interpreter(str(not_python))


def _older_python() -> str | None:
    """Return a Python older than 3.11 found on this machine, if any."""
    found = [f"/usr/bin/python3.{minor}" for minor in range(8, 11)]
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.[89]*/bin/python3")))
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3")))
    return next((path for path in found if os.access(path, os.X_OK)), None)


def test_an_interpreter_older_than_the_worker_supports_is_refused_with_its_version() -> None:
    older = _older_python()
    if older is None:
        pytest.skip("no Python older than 3.11 on this machine")
    too_old = r"is Python 3\.(8|9|10)\.\d+; the workers need Python 3\.11 or later"
    with pytest.raises(WorkerEnvironmentError, match=too_old):
        check_interpreter(older)


def test_an_interpreter_without_the_libraries_a_table_needs_is_refused_naming_them(bare_python: str) -> None:
    table = MiniBatch(index=0, kind="table", piece=TabularPiece(path="/x.csv", format="csv", unit="bytes"))
    config = ParallelRunConfig(entry_script="s.py", python=bare_python)
    with pytest.raises(WorkerEnvironmentError) as caught:
        worker_python(config, mini_batch=table, part_format="text")
    message = str(caught.value)
    assert f"python={bare_python!r} (Python 3." in message
    assert "has no fsspec, no pandas, no tenacity" in message
    assert f"`{bare_python} -m pip install 'fsspec>=2023.10' 'pandas>=2.0' 'tenacity>=8.3'`" in message
    # Files with text output need nothing beyond the standard library: the same interpreter serves.
    assert worker_python(config, mini_batch=batch_of_files(), part_format="text") == bare_python


def batch_of_files() -> MiniBatch:
    return MiniBatch(index=0, kind="files", files=("/x.txt",), items=1)


def test_a_worker_runs_a_file_mini_batch_in_a_bare_interpreter_and_imports_this_package(
    tmp_path: Path, bare_python: str
) -> None:
    script = tmp_path / "who.py"
    script.write_text(WHO)
    settings = WorkerSettings(entry_script=str(script), working_dir=str(tmp_path), python=bare_python)
    worker = WorkerProcess(settings)
    worker.start()
    try:
        result = worker.run(batch(tmp_path, "a.txt"), str(tmp_path / "part.txt"), "text", timeout=60)
    finally:
        worker.shutdown()
    assert result.ok, result
    # The bare interpreter ran it, without pandas: the worker imported none.
    assert (tmp_path / "part.txt").read_text() == f"a.txt {bare_python} False\n"


def test_warm_pools_are_keyed_by_interpreter_so_two_environments_never_share_a_worker(
    tmp_path: Path,
    make_spec,  # noqa: F811 (the fixture imported above)
    bare_python: str,
) -> None:
    spec = make_spec(WHO)
    other = spec.with_python(bare_python)
    assert spec.key() != other.key()
    seen = []
    for each in (spec, other, spec):
        worker = lease_worker(each)
        result = worker.run(batch(tmp_path, "a.txt"), str(tmp_path / "part.txt"), "text", timeout=60)
        assert result.ok, result
        seen.append((worker.pid, (tmp_path / "part.txt").read_text().split()[1]))
        worker.shutdown()
    assert [python for _, python in seen] == [sys.executable, bare_python, sys.executable]
    # Airflow's interpreter's warm worker served its second lease; the other never was lent it.
    assert seen[0][0] == seen[2][0] != seen[1][0]


def test_requirements_built_from_a_python_that_is_missing_fail_before_any_build(tmp_path: Path) -> None:
    config = ParallelRunConfig(
        entry_script="s.py",
        python="/no/such/bin/python",
        requirements=["pandas==2.2.*"],
        venv_cache_path=str(tmp_path / "envs"),
    )
    with pytest.raises(WorkerEnvironmentError, match=r"python='/no/such/bin/python' does not exist on this"):
        worker_python(config, run_key="run-1")
    assert not (tmp_path / "envs").exists() or not list((tmp_path / "envs").iterdir())
