"""Check the supported range from the built wheel: `make test-compat` (issue 18).

Usage: ``python tools/compat.py [--only NAME ...] [--workdir DIR]`` (names: ``TARGETS`` below).

1. Builds the wheel from a clean copy of the project (an isolated ``pip wheel``, as a release is
   built) and checks what it carries: every module of the source tree (the worker runs as
   ``python -m airflow_parallelrun...``), ``py.typed``, the ``apache_airflow_provider`` entry point,
   ``Requires-Python`` and no ``tests/`` or ``dags/``.
2. For each target (the lowest supported Airflow, and Python 3.12 and 3.13 on the pinned Airflow):
   a fresh virtual environment with the wheel and its ``[dev]`` extra under the target's
   constraints, and, from a folder that holds the project but not the package's source (the
   import is checked to come from site-packages): the fast tests (``-m "not slow"``, doctests of
   the installed ``airflow_parallelrun.core`` included), every example DAG through Airflow's
   DagBag (no import errors), and ``airflow dags test parallelrun_digits`` on a fresh SQLite
   home, whose summary must count 1,797 succeeded images. The fast tests include the object-store
   tests: their S3 server comes with the ``[dev]`` extra (moto), their Azurite is installed once
   from the project's npm lock file (``npm ci``).

Nothing is cached: every run builds the wheel and the environments afresh, as a fresh CI machine
does. Each stage prints its time; a failing stage prints the tail of its log and the run goes on
with the next target, then exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_parallelrun"
EXAMPLE_DAG = "parallelrun_digits"
EXAMPLE_ITEMS = 1797  # the scikit-learn digits, one PNG each
# Builds the wheel from the source tree itself (tests/unit/test_packaging.py); stage 1 here does
# the same from a clean copy, and the run folder has no source to build from.
NEEDS_SOURCE_TREE = ["tests/unit/test_packaging.py::test_the_wheel_carries_py_typed"]


@dataclass(frozen=True)
class Target:
    """One environment of the supported range: a Python, an Airflow and the constraints to use."""

    name: str
    python: str
    airflow: str
    constraints: str
    why: str


TARGETS = [
    Target("airflow-3.1-py3.11", "3.11", "3.1.8", "constraints-airflow-3.1.txt", "the lowest Airflow"),
    Target("airflow-3.3-py3.12", "3.12", "3.3.2", "constraints.txt", "the official image's Python"),
    Target("airflow-3.3-py3.13", "3.13", "3.3.2", "constraints.txt", "the newest Python"),
]


class StageFailed(Exception):
    """A stage of one target failed; the message says which and why."""


TIMINGS: list[tuple[str, str, float, bool]] = []


@contextmanager
def stage(target: str, name: str) -> Iterator[None]:
    """Time one stage, print its result and record it for the summary."""
    print(f"\n=== [{target}] {name}", flush=True)
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        took = time.monotonic() - start
        TIMINGS.append((target, name, took, ok))
        print(f"=== [{target}] {name}: {'ok' if ok else 'FAILED'} in {took:.1f}s", flush=True)


def clean_env() -> dict[str, str]:
    """Return this environment without Python's, Airflow's and the examples' settings (no PYTHONPATH)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AIRFLOW", "PARALLELRUN"))}


def run(cmd: list[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` with its output in ``log``; on failure raise with the log's last lines."""
    with open(log, "w") as out:
        env = env or clean_env()
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    text = log.read_text()
    if done.returncode != 0:
        tail = "\n".join(line for line in text.splitlines() if "ignored: it is neither" not in line)[-4000:]
        raise StageFailed(f"{' '.join(cmd[:4])} ... exited {done.returncode} (log {log}):\n{tail}")
    return text


def project_files() -> list[Path]:
    """Return the project's files (tracked and new, not ignored), relative to the root."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [Path(p) for p in listed.split("\0") if p and (ROOT / p).is_file()]


def copy_project(dest: Path, *, with_package: bool) -> None:
    """Copy the project's files to ``dest``, with or without the package's source."""
    for rel in project_files():
        if not with_package and rel.parts[0] == PACKAGE:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def build_wheel(work: Path) -> Path:
    """Build the wheel from a clean copy of the project, in an isolated build environment."""
    source, dist = work / "source", work / "dist"
    copy_project(source, with_package=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(source)], work / "build.log")
    (wheel,) = dist.glob("*.whl")
    return wheel


def wheel_problems(wheel: Path, modules: set[str]) -> list[str]:
    """Return what the wheel lacks or carries wrongly (``modules``: the source's); empty if complete."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        metadata = zf.read(f"{info}/METADATA").decode()
    required = modules | {f"{PACKAGE}/py.typed", f"{PACKAGE}/core/execution/pool/__main__.py"}
    problems = [f"missing {name}" for name in sorted(required - names)]
    problems += [f"carries {n}" for n in sorted(names) if n.split("/")[0] in ("tests", "dags", "docs")]
    provider = f"provider_info = {PACKAGE}.get_provider_info:get_provider_info"
    if "[apache_airflow_provider]" not in entry_points or provider not in entry_points:
        problems.append(f"entry_points.txt lacks the apache_airflow_provider entry point:\n{entry_points}")
    if "Requires-Python: >=3.11" not in metadata:
        problems.append("METADATA does not say Requires-Python: >=3.11")
    return problems


def find_python(version: str) -> str:
    """Return an interpreter for ``version``: ``pythonX.Y`` on PATH, else pyenv's, else fail."""
    for candidate in (shutil.which(f"python{version}"), *pyenv_pythons(version)):
        if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    raise StageFailed(f"no Python {version}: install python{version} (or `pyenv install {version}`)")


def pyenv_pythons(version: str) -> list[str]:
    """Return pyenv's interpreters of ``version``, newest first (a pyenv shim alone may refuse)."""
    if not shutil.which("pyenv"):
        return []
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    found = sorted(Path(root, "versions").glob(f"{version}.*/bin/python{version}"), reverse=True)
    return [str(p) for p in found]


def make_venv(target: Target, wheel: Path, venv: Path, work: Path) -> None:
    """Make a fresh venv of the target's Python with the wheel, its extras and the target's Airflow."""
    run([find_python(target.python), "-m", "venv", str(venv)], work / f"{target.name}-venv.log")
    # --no-compile: Python compiles what the checks import, not all of Airflow's dependencies.
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    constraints = ["-c", str(ROOT / target.constraints)]
    spec = [f"apache-airflow=={target.airflow}", f"{wheel}[dev]"]
    run([*pip, *constraints, *spec], work / f"{target.name}-install.log")


def installed_from(venv: Path, folder: Path) -> str:
    """Check that the package imports from the venv's site-packages when run from ``folder``."""
    code = (
        "import sysconfig, importlib.metadata as m, airflow_parallelrun as p\n"
        "print(p.__file__, sysconfig.get_paths()['purelib'], m.version('apache-airflow'))"
    )
    env = clean_env()
    python = str(venv / "bin" / "python")
    out = subprocess.run([python, "-c", code], cwd=folder, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise StageFailed(f"the package does not import from {folder}:\n{out.stderr[-3000:]}")
    path, purelib, airflow_version = out.stdout.split()
    if not Path(path).resolve().is_relative_to(Path(purelib).resolve()):
        raise StageFailed(f"airflow_parallelrun imports from {path}, not from the wheel in {purelib}")
    return f"{path} (Airflow {airflow_version})"


def airflow_env(home: Path, folder: Path) -> dict[str, str]:
    """Return the environment of a fresh Airflow home (SQLite) with the project's example DAGs."""
    env = clean_env()
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(folder / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PARALLELRUN_EXAMPLES_DIR=str(home / "examples"),
    )
    return env


DAGBAG_CHECK = """
import json, sys
sys.path.insert(0, sys.argv[1])  # as the dag-processor does: parallelrun_examples is importable
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])  # AIRFLOW__CORE__LOAD_EXAMPLES=False: no examples
print(json.dumps({"dag_ids": sorted(bag.dag_ids), "import_errors": bag.import_errors}))
"""


def check_dagbag(python: Path, folder: Path, env: dict[str, str], log: Path) -> str:
    """Parse every example DAG with Airflow's DagBag: no import errors, one DAG per DAG file."""
    out = run([str(python), "-c", DAGBAG_CHECK, str(folder / "dags")], log, cwd=folder, env=env)
    result = json.loads(out.strip().splitlines()[-1])
    expected = sorted(p.stem for p in (folder / "dags").glob("parallelrun_*.py"))
    if result["import_errors"] or result["dag_ids"] != expected:
        raise StageFailed(f"DagBag: expected the DAGs {expected}, got {json.dumps(result, indent=1)}")
    return f"{len(expected)} DAGs, 0 import errors"


def check_example_run(venv: Path, folder: Path, env: dict[str, str], work: Path, name: str) -> str:
    """Run the digits example with ``airflow dags test`` and check its summary's counts."""
    airflow = str(venv / "bin" / "airflow")
    run([airflow, "db", "migrate"], work / f"{name}-db.log", cwd=folder, env=env)
    run([airflow, "dags", "test", EXAMPLE_DAG], work / f"{name}-dags-test.log", cwd=folder, env=env)
    runs = list(Path(env["PARALLELRUN_EXAMPLES_DIR"], "out", "digits").glob("*/_parallelrun/summary.json"))
    if len(runs) != 1:
        raise StageFailed(f"expected one digits run's summary.json, found {runs}")
    summary = json.loads(runs[0].read_text())
    counts = (summary["status"], summary["total_items"], summary["succeeded_items"])
    if counts != ("succeeded", EXAMPLE_ITEMS, EXAMPLE_ITEMS):
        raise StageFailed(f"{EXAMPLE_DAG}: (status, items, succeeded) = {counts}, expected {EXAMPLE_ITEMS}")
    return f"{EXAMPLE_DAG}: succeeded, {EXAMPLE_ITEMS} of {EXAMPLE_ITEMS} items"


def install_azurite(work: Path) -> Path:
    """Install Azurite (the object-store tests' Azure Blob server) from the project's npm lock file, once."""
    folder = work / "azurite"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(ROOT / "tests/servers/azurite-package" / name, folder / name)
    npm = shutil.which("npm")
    if npm is None:
        raise StageFailed("npm is not installed: the object-store tests need Node.js and npm for Azurite")
    run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], work / "azurite.log", cwd=folder)
    return folder / "node_modules/.bin/azurite-blob"


def run_fast_tests(python: Path, folder: Path, azurite: Path) -> None:
    """Run the fast tests and the installed core's doctests from ``folder``, output shown as it comes."""
    deselect = [arg for test in NEEDS_SOURCE_TREE for arg in ("--deselect", test)]
    cmd = [str(python), "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider", "--durations=5"]
    cmd += [*deselect, "tests", "--pyargs", f"{PACKAGE}.core"]
    env = {**clean_env(), "PARALLELRUN_AZURITE": str(azurite)}
    if subprocess.run(cmd, cwd=folder, env=env).returncode != 0:
        raise StageFailed("the fast tests failed (output above)")


def check_target(target: Target, wheel: Path, work: Path, azurite: Path) -> None:
    """Make the target's venv and run every check in it, from a folder without the package source."""
    venv, folder, home = (work / f"{kind}-{target.name}" for kind in ("venv", "run", "home"))
    with stage(target.name, f"venv: Python {target.python}, Airflow {target.airflow}, {target.constraints}"):
        make_venv(target, wheel, venv, work)
    python = venv / "bin" / "python"
    copy_project(folder, with_package=False)
    with stage(target.name, "import from the wheel"):
        print(installed_from(venv, folder))
    with stage(target.name, "fast tests"):
        run_fast_tests(python, folder, azurite)
    env = airflow_env(home, folder)
    with stage(target.name, "example DAGs through the DagBag"):
        print(check_dagbag(python, folder, env, work / f"{target.name}-dagbag.log"))
    with stage(target.name, f"airflow dags test {EXAMPLE_DAG}"):
        print(check_example_run(venv, folder, env, work, target.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=[t.name for t in TARGETS], help="targets to check")
    parser.add_argument("--workdir", type=Path, help="keep the wheel, venvs and logs here")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="parallelrun-compat-"))
    work.mkdir(parents=True, exist_ok=True)
    failures = check_all([t for t in TARGETS if not args.only or t.name in args.only], work)
    print_summary(failures)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


def check_all(targets: list[Target], work: Path) -> list[str]:
    """Build and check the wheel, then check each target; return what failed."""
    failures = []
    try:
        with stage("wheel", "build"):
            wheel = build_wheel(work)
        with stage("wheel", "contents"):
            modules = {str(p) for p in project_files() if p.parts[0] == PACKAGE and p.suffix == ".py"}
            problems = wheel_problems(wheel, modules)
            if problems:
                raise StageFailed("the wheel is incomplete:\n  " + "\n  ".join(problems))
            print(f"{wheel.name}: complete")
        with stage("tests", "Azurite (npm ci)"):
            azurite = install_azurite(work)
    except StageFailed as exc:
        print(exc, flush=True)
        return ["wheel and test servers"]
    for target in targets:
        try:
            check_target(target, wheel, work, azurite)
        except StageFailed as exc:
            print(exc, flush=True)
            failures.append(target.name)
    return failures


def print_summary(failures: list[str]) -> None:
    """Print each stage's time and result, and the total."""
    print("\n=== test-compat summary")
    for target, name, took, ok in TIMINGS:
        print(f"{'ok    ' if ok else 'FAILED'} {took:7.1f}s  [{target}] {name}")
    total = sum(took for _, _, took, _ in TIMINGS)
    print(f"total {total:.1f}s; " + (f"FAILED: {failures}" if failures else "all ok"))


if __name__ == "__main__":
    sys.exit(main())
