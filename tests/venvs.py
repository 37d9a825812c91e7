"""Virtual environments some tests run entry scripts in, built once with pip and kept between sessions.

``cached_venv("azureml-core", ["azureml-core==..."])`` returns the Python of
``<repo>/.venv/test-envs/azureml-core`` (``$PARALLELRUN_TEST_ENVS`` moves the folder), making it
on first use from the package index. A lock file keeps two test processes from building one
environment at once, and a marker written last tells a complete environment from a broken one,
which is built again.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_DONE = ".parallelrun-test-env-complete"


def test_envs_folder() -> Path:
    return Path(os.environ.get("PARALLELRUN_TEST_ENVS") or REPO / ".venv" / "test-envs")


def cached_venv(name: str, requirements: list[str]) -> Path:
    """Return the Python of the test environment ``name`` holding ``requirements``, built if missing."""
    folder = test_envs_folder()
    folder.mkdir(parents=True, exist_ok=True)
    env = folder / name
    python = env / "bin" / "python"
    wanted = "\n".join(requirements)
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = env / _DONE
        if marker.exists() and marker.read_text() == wanted:
            return python
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert installed.returncode == 0, f"pip install {requirements} failed:\n{installed.stderr[-3000:]}"
        marker.write_text(wanted)
    return python
