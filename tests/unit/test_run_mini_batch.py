"""Tests for ``steps.run_mini_batch``: tries, counting, published parts and statuses, remote storage.

Each test partitions a small input folder with ``steps.partition`` and runs a real worker
process on one of its mini-batches. Scripts that count their calls write to files in
``tmp_path``, since each try may run in a new process.
"""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.outputs.status import BatchStatus
from airflow_parallelrun.core.spec import RunSpec

SCRIPTS = Path(__file__).resolve().parent / "scripts"

# Counts each call of run() in $COUNT_FILE and raises while the count is at most $FAILURES.
FLAKY_SCRIPT = """
    import os

    def init():
        with open(os.environ["INIT_FILE"], "a") as f:
            f.write(f"{os.getpid()}\\n")

    def run(mini_batch):
        with open(os.environ["COUNT_FILE"], "a") as f:
            f.write("call\\n")
        with open(os.environ["COUNT_FILE"]) as f:
            calls = len(f.read().splitlines())
        if calls <= int(os.environ["FAILURES"]):
            raise RuntimeError(f"call {calls} fails")
        return [os.path.basename(p) for p in mini_batch]
"""


def write_script(folder: Path, source: str, name: str = "entry.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def make_input(folder: Path, count: int = 5) -> list[str]:
    """Write ``count`` small text files; with mini_batch_size 3 they make mini-batches of 3 and 2."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i}.txt").write_text(f"text {i}\n")
    return [str(folder / f"f{i}.txt") for i in range(count)]


def make_run(tmp_path: Path, script: Path, *, arguments: tuple[str, ...] = (), **config) -> RunSpec:
    """Partition a fresh input folder for ``script`` and return the run's spec."""
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(entry_script="x.py", mini_batch_size="3", **config),
        entry_script=str(script),
        arguments=arguments,
    )
    descriptors = steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    assert [d["id"] for d in descriptors] == ["mb-000000", "mb-000001"]
    return spec


def state(tmp_path: Path, *parts: str) -> Path:
    return tmp_path.joinpath("out", "_parallelrun", *parts)


def part_file(tmp_path: Path, mb_id: str, ext: str = "txt") -> Path:
    """Return where the run now at ``tmp_path/out`` publishes a mini-batch's part (named with its key)."""
    run_key = json.loads(state(tmp_path, "manifest.json").read_text())["run_key"]
    return state(tmp_path, "parts", f"{mb_id}.{run_key[:12]}.{ext}")


def item_counts(status: BatchStatus) -> tuple[int, int, int, int]:
    """Return ``(total, succeeded, failed, returned)`` items of a status."""
    return status.items_total, status.items_succeeded, status.items_failed, status.items_returned


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def flaky(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Return the flaky script and the environment it needs, minus FAILURES."""
    make_input(tmp_path / "in")
    env = {"COUNT_FILE": str(tmp_path / "calls.txt"), "INIT_FILE": str(tmp_path / "inits.txt")}
    return write_script(tmp_path, FLAKY_SCRIPT), env


# --- tries --------------------------------------------------------------------------------------


def test_failed_tries_are_retried_until_one_succeeds(tmp_path, flaky):
    script, env = flaky
    spec = make_run(tmp_path, script, run_max_try=3, environment_variables={**env, "FAILURES": "2"})
    status = steps.run_mini_batch(0, spec)
    assert status.succeeded, status
    assert status.tries == 3
    assert lines(tmp_path / "calls.txt") == ["call"] * 3
    assert lines(Path(status.part)) == ["f0.txt", "f1.txt", "f2.txt"]
    assert (status.items_succeeded, status.items_failed) == (3, 0)
    # run() raising leaves the worker alive: the model is loaded once for all three tries.
    assert len(lines(tmp_path / "inits.txt")) == 1


def test_a_mini_batch_failing_every_try_fails_after_run_max_try(tmp_path, flaky):
    script, env = flaky
    spec = make_run(tmp_path, script, run_max_try=2, environment_variables={**env, "FAILURES": "99"})
    status = steps.run_mini_batch(0, spec)
    assert status.status == "failed"
    assert status.tries == 2
    assert lines(tmp_path / "calls.txt") == ["call"] * 2
    assert (status.items_total, status.items_succeeded, status.items_failed) == (3, 0, 3)
    assert status.error_category == "entry_script"
    assert status.error_message == "run() raised RuntimeError: call 2 fails"
    assert f'File "{script}"' in status.error_traceback
    assert status.part is None
    assert not state(tmp_path, "parts").exists()
    saved = json.loads(state(tmp_path, "status", "mb-000000.json").read_text())
    assert (saved["status"], saved["tries"], saved["items_failed"]) == ("failed", 2, 3)


def test_a_script_that_cannot_load_fails_at_once_without_using_its_tries(tmp_path):
    make_input(tmp_path / "in")
    imports = tmp_path / "imports.txt"
    script = write_script(
        tmp_path,
        f"""
        with open({str(imports)!r}, "a") as f:
            f.write("imported\\n")

        import module_that_does_not_exist_anywhere

        def run(mini_batch):
            return mini_batch
    """,
    )
    spec = make_run(tmp_path, script, run_max_try=3)
    status = steps.run_mini_batch(0, spec)
    assert status.status == "failed"
    assert status.tries == 1
    assert lines(imports) == ["imported"]
    assert status.error_category == "entry_script_load"
    assert "ModuleNotFoundError" in status.error_message
    assert f'File "{script}", line 4' in status.error_traceback
    assert (status.items_total, status.items_failed) == (3, 3)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_timed_out_try_is_retried_in_a_fresh_worker(tmp_path):
    make_input(tmp_path / "in")
    inits, calls = tmp_path / "inits.txt", tmp_path / "calls.txt"
    script = write_script(
        tmp_path,
        f"""
        import os
        import time

        def init():
            with open({str(inits)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")

        def run(mini_batch):
            with open({str(calls)!r}, "a") as f:
                f.write("call\\n")
            if len(open({str(calls)!r}).read().splitlines()) == 1:
                time.sleep(3600)
            return list(mini_batch)
    """,
    )
    # The timeout is ample for the second try's run() on a busy machine; the first try's never returns.
    spec = make_run(tmp_path, script, run_max_try=2, run_invocation_timeout=3)
    started = time.monotonic()
    status = steps.run_mini_batch(0, spec)
    assert time.monotonic() - started < 3600  # the stuck try was killed, not waited for
    assert status.succeeded, status
    assert status.tries == 2
    pids = lines(inits)
    assert len(pids) == 2 and pids[0] != pids[1], "the killed worker must be replaced by a new process"


# --- what is published ----------------------------------------------------------------------------


def test_part_and_status_are_published_under_the_state_folder(tmp_path):
    inputs = make_input(tmp_path / "in")
    spec = make_run(tmp_path, SCRIPTS / "run_only_script.py")
    first, second = steps.run_mini_batch(0, spec), steps.run_mini_batch(1, spec)

    assert first.part == str(part_file(tmp_path, "mb-000000"))
    assert lines(part_file(tmp_path, "mb-000000")) == ["text 0", "text 1", "text 2"]
    assert lines(part_file(tmp_path, "mb-000001")) == ["text 3", "text 4"]

    saved = json.loads(state(tmp_path, "status", "mb-000000.json").read_text())
    assert BatchStatus.from_dict(saved) == first
    assert saved["id"] == "mb-000000" and saved["index"] == 0
    assert saved["status"] == "succeeded" and saved["tries"] == 1
    assert saved["inputs"] == inputs[:3]
    counts = ("items_total", "items_succeeded", "items_failed", "items_returned")
    assert [saved[name] for name in counts] == [3, 3, 0, 3]
    assert 0 < saved["seconds_run"] <= saved["seconds_total"]
    assert (second.items_total, second.items_succeeded, second.inputs) == (2, 2, inputs[3:])


def test_arguments_and_environment_from_the_run_reach_an_azure_style_script(tmp_path):
    make_input(tmp_path / "in")
    spec = make_run(
        tmp_path,
        SCRIPTS / "azure_style_script.py",
        arguments=("--model_name", "digits", "--unknown", "1"),
        environment_variables={"GREETING": "hi"},
        append_row_format="csv",
    )
    status = steps.run_mini_batch(1, spec)
    assert status.succeeded, status
    import pandas as pd

    rows = pd.read_csv(part_file(tmp_path, "mb-000001", "csv")).to_dict("records")
    assert [r["file"] for r in rows] == ["f3.txt", "f4.txt"]
    assert {(r["model_name"], r["unknown_args"], r["greeting"], r["mini_batch_id"]) for r in rows} == {
        ("digits", "--unknown 1", "hi", "mb-000001"),
    }
    assert {r["output_dir"] for r in rows} == {str(tmp_path / "out")}
    assert {r["log_dir"] for r in rows} == {str(state(tmp_path, "logs", "user"))}
    assert lines(state(tmp_path, "logs", "user", "init.log")) == ["model_name=digits"]
    assert {r["airflow_loaded"] for r in rows} == {False}


def test_a_succeeded_mini_batch_is_not_run_again(tmp_path, flaky):
    script, env = flaky
    spec = make_run(tmp_path, script, environment_variables={**env, "FAILURES": "0"})
    first = steps.run_mini_batch(0, spec)
    assert first.succeeded
    status_file = state(tmp_path, "status", "mb-000000.json")
    saved = status_file.read_bytes()

    again = steps.run_mini_batch(0, spec)
    assert again == first
    assert lines(tmp_path / "calls.txt") == ["call"], "the script ran a second time"
    assert len(lines(tmp_path / "inits.txt")) == 1
    assert status_file.read_bytes() == saved


def test_a_failed_mini_batch_is_run_again_when_called_again(tmp_path, flaky):
    script, env = flaky
    spec = make_run(tmp_path, script, run_max_try=1, environment_variables={**env, "FAILURES": "1"})
    first = steps.run_mini_batch(0, spec)
    assert first.status == "failed" and first.tries == 1
    assert not part_file(tmp_path, "mb-000000").exists()

    again = steps.run_mini_batch(0, spec)
    assert again.succeeded, again
    assert lines(tmp_path / "calls.txt") == ["call", "call"]
    assert lines(part_file(tmp_path, "mb-000000")) == ["f0.txt", "f1.txt", "f2.txt"]
    saved = json.loads(state(tmp_path, "status", "mb-000000.json").read_text())
    assert saved["status"] == "succeeded" and saved["error_category"] == ""


# --- counting what run() returned ---------------------------------------------------------------


def test_too_few_results_count_the_shortfall_as_failed_items(tmp_path):
    make_input(tmp_path / "in")
    script = write_script(
        tmp_path,
        """
        def run(mini_batch):
            return ["only the first"]
    """,
    )
    status = steps.run_mini_batch(0, make_run(tmp_path, script))
    assert status.status == "succeeded"
    assert item_counts(status) == (3, 1, 2, 1)
    assert status.error_category == "shortfall"
    assert "returned 1 results for 3 items" in status.error_message
    assert lines(Path(status.part)) == ["only the first"]
    saved = json.loads(state(tmp_path, "status", "mb-000000.json").read_text())
    assert (saved["items_failed"], saved["error_category"]) == (2, "shortfall")


def test_more_results_than_items_count_every_item_succeeded_and_keep_the_extra_rows(tmp_path):
    make_input(tmp_path / "in")
    script = write_script(
        tmp_path,
        """
        import os

        def run(mini_batch):
            return [f"{os.path.basename(p)} #{k}" for p in mini_batch for k in (1, 2)]
    """,
    )
    status = steps.run_mini_batch(0, make_run(tmp_path, script))
    assert status.succeeded
    assert item_counts(status) == (3, 3, 0, 6)
    assert status.error_category == ""
    assert lines(Path(status.part)) == [f"f{i}.txt #{k}" for i in range(3) for k in (1, 2)]


def test_run_output_error_fails_the_mini_batch_with_every_item_failed(tmp_path):
    make_input(tmp_path / "in")
    script = write_script(
        tmp_path,
        """
        def run(mini_batch):
            return {"not": "a list"}
    """,
    )
    status = steps.run_mini_batch(0, make_run(tmp_path, script, run_max_try=1))
    assert status.status == "failed"
    assert status.error_category == "run_output"
    assert "expected a list" in status.error_message
    assert (status.items_total, status.items_failed) == (3, 3)


# --- summary_only and remote storage ------------------------------------------------------------

SUMMARY_ONLY_SCRIPT = """
    import os

    from airflow_parallelrun import EntryScript

    def run(mini_batch):
        entry_script = EntryScript()
        for path in mini_batch:
            name = os.path.basename(path)
            with open(os.path.join(entry_script.output_dir, name + ".pred"), "w") as f:
                f.write("prediction for " + name)
        with open(os.path.join(entry_script.log_dir, entry_script.mini_batch_id + ".log"), "w") as f:
            f.write("scored")
        return list(mini_batch)
"""


def test_summary_only_writes_no_part_and_keeps_the_scripts_own_outputs(tmp_path):
    make_input(tmp_path / "in")
    script = write_script(tmp_path, SUMMARY_ONLY_SCRIPT)
    status = steps.run_mini_batch(0, make_run(tmp_path, script, output_action="summary_only"))
    assert status.succeeded, status
    assert status.part is None
    assert not state(tmp_path, "parts").exists()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.pred")) == ["f0.txt.pred", "f1.txt.pred", "f2.txt.pred"]
    assert (out / "f1.txt.pred").read_text() == "prediction for f1.txt"
    assert state(tmp_path, "logs", "user", "mb-000000.log").read_text() == "scored"
    assert state(tmp_path, "status", "mb-000000.json").exists()


@pytest.fixture
def memory_root() -> Iterator[str]:
    """Return a fresh folder of fsspec's in-process memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/parallelrun-test-{uuid.uuid4().hex}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def memory_run(tmp_path: Path, memory_root: str, script: Path, **config) -> RunSpec:
    fs = fsspec.filesystem("memory")
    for i in range(5):
        fs.pipe_file(f"{memory_root}/in/f{i}.txt", f"text {i}\n".encode())
    spec = RunSpec(
        output_path=f"memory://{memory_root}/out",
        config=ParallelRunConfig(entry_script="x.py", mini_batch_size="3", **config),
        entry_script=str(script),
    )
    steps.partition(FileDataset(path=f"memory://{memory_root}/in"), spec)
    return spec


def test_memory_filesystem_input_is_staged_locally_and_outputs_stay_in_memory(tmp_path, memory_root):
    script = write_script(
        tmp_path,
        """
        import os

        def run(mini_batch):
            results = []
            for path, name in zip(mini_batch, ["f3.txt", "f4.txt"]):
                with open(path) as f:
                    results.append(f"{os.path.isabs(path)} {path.endswith(name)} {f.read().strip()}")
            return results
    """,
    )
    spec = memory_run(tmp_path, memory_root, script)
    status = steps.run_mini_batch(1, spec)
    assert status.succeeded, status
    fs = fsspec.filesystem("memory")
    run_key = json.loads(fs.cat_file(f"{memory_root}/out/_parallelrun/manifest.json"))["run_key"]
    assert status.part == f"{memory_root}/out/_parallelrun/parts/mb-000001.{run_key[:12]}.txt"
    # The worker read local copies of f3 and f4 (its own process has no memory filesystem).
    assert fs.cat_file(status.part).decode().splitlines() == ["True True text 3", "True True text 4"]
    saved = json.loads(fs.cat_file(f"{memory_root}/out/_parallelrun/status/mb-000001.json"))
    assert saved["status"] == "succeeded" and saved["items_succeeded"] == 2
    assert saved["inputs"] == [f"memory://{memory_root}/in/f3.txt", f"memory://{memory_root}/in/f4.txt"]


def test_summary_only_outputs_are_uploaded_to_a_remote_output_path(tmp_path, memory_root):
    script = write_script(tmp_path, SUMMARY_ONLY_SCRIPT)
    status = steps.run_mini_batch(0, memory_run(tmp_path, memory_root, script, output_action="summary_only"))
    assert status.succeeded, status
    fs = fsspec.filesystem("memory")
    out = f"{memory_root}/out"
    predictions = sorted(fs.glob(f"{out}/*.pred"))
    assert len(predictions) == 3 and predictions[1].endswith("f1.txt.pred")
    assert fs.cat_file(predictions[1]).decode().endswith("f1.txt")
    assert fs.cat_file(f"{out}/_parallelrun/logs/user/mb-000000.log") == b"scored"
    assert not fs.exists(f"{out}/_parallelrun/parts")


# --- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("processes", "environment", "expected"),
    [(1, {}, None), (2, {}, None), (2, {"OMP_NUM_THREADS": "3"}, "3")],
)
def test_workers_share_the_cores_unless_told_otherwise(
    tmp_path, monkeypatch, processes, environment, expected
):
    import os

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    make_input(tmp_path / "in")
    script = write_script(
        tmp_path,
        """
        import os

        def run(mini_batch):
            threads = os.environ["OMP_NUM_THREADS"] + " " + os.environ["OPENBLAS_NUM_THREADS"]
            return [threads for _ in mini_batch]
        """,
    )
    spec = make_run(tmp_path, script, process_count_per_node=processes, environment_variables=environment)
    steps.run_mini_batch(0, spec)
    steps.aggregate(spec)
    shared = str(max(1, (os.cpu_count() or 1) // processes))
    omp = expected or shared
    assert set(lines(tmp_path / "out" / "parallel_run_step.txt")) == {f"{omp} {shared}"}


def test_a_run_task_without_warm_workers_sweeps_scratch_folders_killed_tasks_left(tmp_path, monkeypatch):
    import os
    import tempfile

    from airflow_parallelrun.core.steps import run as run_step

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(run_step, "_swept", False)
    two_days_ago = time.time() - 2 * 24 * 3600
    left = tmp / "parallelrun-killed"
    (left / "input").mkdir(parents=True)
    (left / "input" / "f0.txt").write_text("staged by a task that was killed")
    for path in (left / "input" / "f0.txt", left / "input", left):
        os.utime(path, (two_days_ago, two_days_ago))
    young = tmp / "parallelrun-running"
    young.mkdir()
    make_input(tmp_path / "in")
    script = write_script(tmp_path, "def run(mini_batch):\n    return list(mini_batch)\n")
    spec = make_run(tmp_path, script, warm_workers=False)
    assert steps.run_mini_batch(0, spec).succeeded
    assert not left.exists()
    assert young.exists()


def test_the_summary_lists_mini_batches_run_again_by_a_later_task_try_or_retried_inside_one(
    tmp_path, monkeypatch
):
    """A worker killed mid-task: Airflow retries the task, whose mini-batch then runs in try 2."""
    make_input(tmp_path / "in")
    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "count"))
    monkeypatch.setenv("INIT_FILE", str(tmp_path / "init"))
    monkeypatch.setenv("FAILURES", "1")  # the first run() call fails, its second try succeeds
    spec = make_run(tmp_path, write_script(tmp_path, FLAKY_SCRIPT), run_max_try=2)

    first = steps.run_mini_batch(0, spec, task_try=1)
    second = steps.run_mini_batch(1, spec, task_try=2)
    summary = steps.aggregate(spec)

    assert (first.tries, first.task_try, second.tries, second.task_try) == (2, 1, 1, 2)
    assert summary["retried_mini_batches"] == [
        {"id": "mb-000000", "inputs": first.inputs, "status": "succeeded", "task_try": 1, "tries": 2},
        {"id": "mb-000001", "inputs": second.inputs, "status": "succeeded", "task_try": 2, "tries": 1},
    ]
