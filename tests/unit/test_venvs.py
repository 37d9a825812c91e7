"""The workers' virtual environment: built once per node even when two tasks ask at once, failing once.

Real builds: ``python -m venv`` and pip from the package index, into a cache folder of the test's
own (pip's download cache makes a second session quicker).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_parallelrun.core.errors import WorkerEnvironmentError
from airflow_parallelrun.core.execution.interpreters import check_interpreter
from airflow_parallelrun.core.execution.venvs import READY, venv_python

pytestmark = pytest.mark.slow

# What a run task does when it needs its workers' interpreter, in a process of its own.
TASK = textwrap.dedent(
    """
    import json, sys
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.execution.venvs import worker_python

    config = ParallelRunConfig(
        entry_script="s.py", requirements=["pandas==2.2.*"], venv_cache_path=sys.argv[1]
    )
    print(json.dumps(worker_python(config, run_key=sys.argv[2])))
    """
)


PANDAS_VERSION = "import pandas; print(pandas.__version__)"


def builds(cache: Path) -> int:
    """Return how many builds the cache's logs record (one line each, whoever built)."""
    return sum(log.read_text().count("=== build for run") for log in cache.glob("venv-*.log"))


def test_two_tasks_asking_at_once_build_the_environment_once_and_share_it(tmp_path: Path) -> None:
    cache = tmp_path / "envs"
    tasks = [
        subprocess.Popen([sys.executable, "-c", TASK, str(cache), key], stdout=subprocess.PIPE, text=True)
        for key in ("run-a", "run-b")
    ]
    pythons = [json.loads(task.communicate(timeout=1200)[0]) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0]
    assert pythons[0] == pythons[1]
    assert builds(cache) == 1
    folder = Path(pythons[0]).parent.parent
    assert json.loads((folder / READY).read_text())["requirements"] == ["pandas==2.2.*"]
    version = subprocess.run([pythons[0], "-c", PANDAS_VERSION], capture_output=True)
    assert version.stdout.decode().strip() == "2.2.3"
    # Reused: asked again (another run), nothing is built.
    base = check_interpreter(sys.executable)
    assert venv_python(["pandas==2.2.*"], base, str(cache), run_key="run-c") == pythons[0]
    assert builds(cache) == 1


def test_a_bad_requirement_fails_with_pips_message_once_per_run(tmp_path: Path) -> None:
    cache = str(tmp_path / "envs")
    base = check_interpreter(sys.executable)
    bad = ["no-such-package-parallelrun==1.0"]
    with pytest.raises(WorkerEnvironmentError) as first:
        venv_python(bad, base, cache, run_key="run-1")
    message = str(first.value)
    assert message.startswith("requirements=['no-such-package-parallelrun==1.0']: could not install")
    assert "ERROR: No matching distribution found for no-such-package-parallelrun==1.0" in message
    assert "Fix requirements=" in message and first.value.category == "environment"
    assert "no-such-package-parallelrun" in first.value.traceback  # pip's output
    assert builds(tmp_path / "envs") == 1
    assert not [path for path in (tmp_path / "envs").iterdir() if path.is_dir()]  # no half-built folder
    # Another task instance of the same run: the same message at once, pip not run again.
    once = r"pip ran once, at .* not run again in this run"
    with pytest.raises(WorkerEnvironmentError, match=once) as again:
        venv_python(bad, base, cache, run_key="run-1")
    assert "No matching distribution found" in str(again.value)
    assert builds(tmp_path / "envs") == 1
    # The next run tries again (a network outage would have healed by then).
    with pytest.raises(WorkerEnvironmentError, match="No matching distribution found"):
        venv_python(bad, base, cache, run_key="run-2")
    assert builds(tmp_path / "envs") == 2
