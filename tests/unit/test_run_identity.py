"""Tests for run identity: two runs at one output path, resume, and the summary's truth.

Each test drives the core API the way the Airflow tasks do (partition, run, aggregate) with
real entry-script processes, real files and fsspec's in-process memory filesystem.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import (
    AggregateError,
    InputError,
    OutputPathInUse,
    RunSuperseded,
    StorageError,
)
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.outputs.status import SUCCEEDED, BatchStatus
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.manifest import read_manifest_header

# Scores a file as "<its text>"; waits for $GO_FILE (when set) after writing $STARTED_FILE, so a
# test can act while run() is in the middle of a mini-batch. Counts calls in $COUNT_FILE.
SCRIPT = """
import os
import time

def run(mini_batch):
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write(" ".join(os.path.basename(p) for p in mini_batch) + "\\n")
    go = os.environ.get("GO_FILE")
    if go:
        open(os.environ["STARTED_FILE"], "w").close()
        while not os.path.exists(go):
            time.sleep(0.05)
    return [open(p).read().strip() for p in mini_batch]
"""

OWNER_A = {"dag_id": "nightly", "run_id": "scheduled__2026-11-28", "task_id": "score.partition"}
OWNER_B = {"dag_id": "nightly", "run_id": "manual__2026-11-28", "task_id": "score.partition"}


def write_inputs(folder: Path, prefix: str, count: int = 4) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{prefix}{i}.txt").write_text(f"{prefix}{i}")
    return [str(folder / f"{prefix}{i}.txt") for i in range(count)]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "score.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def spec_of(tmp_path: Path, script: Path, output: str | None = None, **config: Any) -> RunSpec:
    env = {"COUNT_FILE": str(tmp_path / "calls.txt"), **config.pop("environment_variables", {})}
    return RunSpec(
        output_path=output or str(tmp_path / "out"),
        config=ParallelRunConfig(
            entry_script="x.py",
            mini_batch_size="2",
            warm_workers=False,
            environment_variables=env,
            **config,
        ),
        entry_script=str(script),
    )


def run_key(spec: RunSpec) -> str:
    return str(read_manifest_header(spec.layout())["run_key"])


def summary_of(spec: RunSpec) -> dict[str, Any]:
    layout = spec.layout()
    return dict(layout.output.read_json(layout.summary))


def merged_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def wait_for(path: Path, what: str) -> None:
    """Wait until ``path`` exists: a condition, not a duration; the bound only stops a hung test."""
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


# --- two runs at one path ------------------------------------------------------------------------


def test_a_straggler_of_an_earlier_run_publishes_nothing_the_new_run_merges(tmp_path, script):
    """Run A's task is inside run() when run B takes the path over: A publishes nothing, B is right."""
    write_inputs(tmp_path / "in_a", "a")
    write_inputs(tmp_path / "in_b", "b")
    started, go = tmp_path / "started", tmp_path / "go"
    spec_a = spec_of(
        tmp_path, script, environment_variables={"GO_FILE": str(go), "STARTED_FILE": str(started)}
    )
    steps.partition(FileDataset(path=str(tmp_path / "in_a")), spec_a, owner=OWNER_A)
    key_a = run_key(spec_a)
    raised: list[BaseException] = []

    def straggler() -> None:
        try:
            steps.run_mini_batch(0, spec_a, run_key=key_a)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=straggler)
    thread.start()
    wait_for(started, "run A's run()")
    # A is not active any more as far as Airflow knows (say, marked failed): B takes the path over.
    spec_b = spec_of(tmp_path, script)
    steps.partition(
        FileDataset(path=str(tmp_path / "in_b")), spec_b, owner=OWNER_B, is_active=lambda owner: False
    )
    key_b = run_key(spec_b)
    go.touch()
    thread.join()

    assert len(raised) == 1 and isinstance(raised[0], RunSuperseded), raised
    message = str(raised[0])
    assert str(tmp_path / "out") in message and "manual__2026-11-28" in message
    assert "own output_path" in message and "{{ run_id }}" in message
    layout = spec_b.layout()
    # Nothing of A's was published: no part with its key, no status, no dead letter.
    assert not list((tmp_path / "out" / "_parallelrun").rglob(f"*{key_a[:12]}*"))
    assert not layout.output.exists(layout.status("mb-000000"))

    statuses = steps.run_mini_batches([0, 1], spec_b, run_key=key_b)
    assert all(s.succeeded and s.run_key == key_b for s in statuses)
    summary = steps.aggregate(spec_b, run_key=key_b)
    assert merged_lines(tmp_path) == ["b0", "b1", "b2", "b3"]
    assert summary["status"] == "succeeded" and summary["run_key"] == key_b
    assert summary["reused_mini_batches"] == 0


def test_a_straggler_past_its_last_check_cannot_replace_a_part_the_new_run_merges(tmp_path, script):
    """The known race: A checked the manifest, then B took over; A's late part lands beside B's."""
    write_inputs(tmp_path / "in_a", "a")
    write_inputs(tmp_path / "in_b", "b")
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in_a")), spec)
    key_a = run_key(spec)
    steps.partition(FileDataset(path=str(tmp_path / "in_b")), spec)
    steps.run_mini_batches([0, 1], spec)
    layout = spec.layout()
    # What A's task publishes for mb-000000 after its check passed: its part, named as A names it.
    layout.output.write_bytes(layout.part("mb-000000", "txt", key_a), b"a0\na1\n")

    steps.aggregate(spec)
    assert merged_lines(tmp_path) == ["b0", "b1", "b2", "b3"]


def test_statuses_and_parts_of_another_run_are_not_merged(tmp_path, script):
    """A record of a run the manifest does not accept counts as missing, whatever it says."""
    write_inputs(tmp_path / "in", "x")
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    steps.run_mini_batch(0, spec)
    layout = spec.layout()
    foreign = uuid.uuid4().hex
    part = layout.part("mb-000001", "txt", foreign)
    layout.output.write_bytes(part, b"FROM ANOTHER RUN\n")
    forged = BatchStatus(
        id="mb-000001",
        index=1,
        status=SUCCEEDED,
        items_total=2,
        items_succeeded=2,
        part=part,
        run_key=foreign,
    )
    layout.output.write_json(layout.status("mb-000001"), forged.to_dict())

    summary = steps.aggregate(spec)
    assert merged_lines(tmp_path) == ["x0", "x1"]
    assert (summary["succeeded_mini_batches"], summary["failed_mini_batches"]) == (1, 1)

    # The run's own task is not fooled either: it runs the mini-batch instead of reusing the record.
    status = steps.run_mini_batch(1, spec)
    assert status.succeeded and status.run_key == run_key(spec)
    assert calls(tmp_path) == ["x0.txt x1.txt", "x2.txt x3.txt"]
    steps.aggregate(spec)
    assert merged_lines(tmp_path) == ["x0", "x1", "x2", "x3"]


def test_a_second_run_is_refused_while_the_first_is_active(tmp_path, script):
    write_inputs(tmp_path / "in", "x")
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec, owner=OWNER_A)
    key_a = run_key(spec)
    asked: list[dict[str, Any]] = []

    def active(owner: dict[str, Any]) -> bool:
        asked.append(owner)
        return True

    with pytest.raises(OutputPathInUse) as info:
        steps.partition(FileDataset(path=str(tmp_path / "in")), spec, owner=OWNER_B, is_active=active)
    message = str(info.value)
    assert asked == [OWNER_A]
    assert str(tmp_path / "out") in message and "scheduled__2026-11-28" in message and key_a in message
    assert "own output_path" in message and "wait until that run has finished" in message
    # Nothing of A's changed: its manifest, and its summary still says running.
    assert run_key(spec) == key_a
    assert summary_of(spec)["status"] == "running" and summary_of(spec)["run_key"] == key_a

    # A state that cannot be read is refused too, saying so and how to override.
    def unknown(owner: dict[str, Any]) -> bool:
        raise ConnectionError("API server unreachable")

    with pytest.raises(OutputPathInUse, match=r"cannot be read.*ConnectionError.*API server unreachable"):
        steps.partition(FileDataset(path=str(tmp_path / "in")), spec, owner=OWNER_B, is_active=unknown)
    assert run_key(spec) == key_a

    # A finishes undisturbed.
    steps.run_mini_batches([0, 1], spec, run_key=key_a)
    assert steps.aggregate(spec, run_key=key_a)["status"] == "succeeded"


def test_a_finished_run_or_the_same_dag_run_is_taken_over_without_asking(tmp_path, script):
    write_inputs(tmp_path / "in", "x")
    spec = spec_of(tmp_path, script)

    def never(owner: dict[str, Any]) -> bool:
        raise AssertionError(f"asked whether {owner} is active")

    steps.partition(FileDataset(path=str(tmp_path / "in")), spec, owner=OWNER_A)
    # The same DAG run's partition task, cleared and run again, takes its own path over.
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec, owner=OWNER_A, is_active=never)
    steps.run_mini_batches([0, 1], spec)
    steps.aggregate(spec)
    # A finished run (its own final summary) is not asked about.
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec, owner=OWNER_B, is_active=never)
    assert read_manifest_header(spec.layout())["owner"] == OWNER_B


# --- resume --------------------------------------------------------------------------------------


def test_resume_adopts_the_earlier_runs_succeeded_statuses_and_ignores_a_third_runs(tmp_path, script):
    write_inputs(tmp_path / "in", "x", count=6)
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec, owner=OWNER_A)
    key_a = run_key(spec)
    steps.run_mini_batch(0, spec, run_key=key_a)
    # A third run's straggler left a succeeded status (and its part) for mb-000001.
    layout = spec.layout()
    key_c = uuid.uuid4().hex
    part = layout.part("mb-000001", "txt", key_c)
    layout.output.write_bytes(part, b"THIRD RUN\n")
    forged = BatchStatus(
        id="mb-000001", index=1, status=SUCCEEDED, items_total=2, items_succeeded=2, part=part, run_key=key_c
    )
    layout.output.write_json(layout.status("mb-000001"), forged.to_dict())

    steps.partition(
        FileDataset(path=str(tmp_path / "in")), spec, resume=True, owner=OWNER_B, is_active=lambda o: False
    )
    header = read_manifest_header(layout)
    key_b = header["run_key"]
    assert header["resumed"] is True and header["accepted_keys"] == [key_b, key_a]

    statuses = steps.run_mini_batches([0, 1, 2], spec, run_key=key_b)
    assert [s.run_key for s in statuses] == [key_a, key_b, key_b]
    assert calls(tmp_path) == ["x0.txt x1.txt", "x2.txt x3.txt", "x4.txt x5.txt"]
    summary = steps.aggregate(spec, run_key=key_b)
    assert merged_lines(tmp_path) == ["x0", "x1", "x2", "x3", "x4", "x5"]
    assert summary["reused_mini_batches"] == 1 and summary["run_key"] == key_b


def test_resume_of_explicit_remote_files_notices_a_changed_content(tmp_path, script):
    fs = fsspec.filesystem("memory")
    root = f"/parallelrun-identity-{uuid.uuid4().hex}"
    files = [f"memory://{root}/in/f{i}.txt" for i in range(4)]
    try:
        for i, url in enumerate(files):
            fs.pipe_file(url.removeprefix("memory://"), f"v1 {i}".encode())
        spec = spec_of(tmp_path, script)
        steps.partition(FileDataset(files=files), spec)
        steps.run_mini_batches([0, 1], spec)
        steps.aggregate(spec)

        steps.partition(FileDataset(files=files), spec, resume=True)
        assert read_manifest_header(spec.layout())["resumed"] is True

        # Same name, new content (and size): the earlier results must not be reused.
        fs.pipe_file(files[2].removeprefix("memory://"), b"version two of f2")
        steps.partition(FileDataset(files=files), spec, resume=True)
        header = read_manifest_header(spec.layout())
        assert header["resumed"] is False and "the input changed" in header["resume_note"]
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)


# --- the summary tells the truth -----------------------------------------------------------------


def test_a_new_run_at_an_old_path_never_leaves_the_old_succeeded_summary(tmp_path, script):
    write_inputs(tmp_path / "in", "x")
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    steps.run_mini_batches([0, 1], spec)
    assert steps.aggregate(spec)["status"] == "succeeded"

    # A new run that fails in its partition step says failed, and why.
    with pytest.raises(InputError):
        steps.partition(FileDataset(path=str(tmp_path / "missing")), spec)
    summary = summary_of(spec)
    assert summary["status"] == "failed" and "does not exist" in summary["error"]

    # A new run whose tasks never finish says running, not succeeded.
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    assert summary_of(spec)["status"] == "running"
    assert summary_of(spec)["run_key"] == run_key(spec)


def test_an_aggregate_that_fails_writes_a_failed_summary_first(tmp_path, script):
    write_inputs(tmp_path / "in", "x")
    spec = spec_of(tmp_path, script, append_row_format="parquet")
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    statuses = steps.run_mini_batches([0, 1], spec)
    assert all(s.succeeded for s in statuses)
    # Every mini-batch was scored; then one part is damaged (a storage fault, a truncated upload).
    Path(str(statuses[1].part)).write_bytes(b"not a parquet file")

    with pytest.raises(AggregateError) as info:
        steps.aggregate(spec)
    message = str(info.value)
    assert "framework error" in message and "clear the aggregate task" in message
    summary = summary_of(spec)
    assert summary["status"] == "failed" and summary["step"] == "aggregate"
    assert summary["run_key"] == run_key(spec) and summary["error"]


def test_an_aggregate_of_a_superseded_run_writes_nothing(tmp_path, script):
    write_inputs(tmp_path / "in", "x")
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    key_a = run_key(spec)
    steps.run_mini_batches([0, 1], spec, run_key=key_a)
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)

    with pytest.raises(RunSuperseded):
        steps.aggregate(spec, run_key=key_a)
    assert summary_of(spec)["status"] == "running" and summary_of(spec)["run_key"] == run_key(spec)
    assert not (tmp_path / "out" / "parallel_run_step.txt").exists()


# --- summary_only with a remote output -----------------------------------------------------------

FAILING_SUMMARY_ONLY_SCRIPT = """
import os

from airflow_parallelrun import EntryScript

def run(mini_batch):
    entry_script = EntryScript()
    with open(os.path.join(entry_script.output_dir, entry_script.mini_batch_id + ".partial"), "w") as f:
        f.write("half done")
    with open(os.path.join(entry_script.log_dir, entry_script.mini_batch_id + ".log"), "a") as f:
        f.write("try\\n")
    if "bad" in open(mini_batch[0]).read():
        raise ValueError("cannot score")
    return list(mini_batch)
"""


@pytest.fixture
def memory_root() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/parallelrun-identity-{uuid.uuid4().hex}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_summary_only_to_a_remote_output_publishes_nothing_of_a_failed_mini_batch(tmp_path, memory_root):
    fs = fsspec.filesystem("memory")
    script = tmp_path / "partial.py"
    script.write_text(textwrap.dedent(FAILING_SUMMARY_ONLY_SCRIPT))
    for i, text in enumerate(["bad", "ok", "ok", "ok"]):
        fs.pipe_file(f"{memory_root}/in/f{i}.txt", text.encode())
    spec = RunSpec(
        output_path=f"memory://{memory_root}/out",
        config=ParallelRunConfig(
            entry_script="x.py", mini_batch_size="2", output_action="summary_only", run_max_try=2
        ),
        entry_script=str(script),
    )
    steps.partition(FileDataset(path=f"memory://{memory_root}/in"), spec)
    failed, succeeded = steps.run_mini_batches([0, 1], spec)

    assert failed.status == "failed" and succeeded.succeeded
    out = f"{memory_root}/out"
    assert not fs.exists(f"{out}/mb-000000.partial")
    assert fs.cat_file(f"{out}/mb-000001.partial") == b"half done"
    # The user's logs of every try are published, the failed ones' included.
    assert fs.cat_file(f"{out}/_parallelrun/logs/user/mb-000000.log") == b"try\ntry\n"


# --- duplicates ----------------------------------------------------------------------------------


def test_a_file_listed_twice_is_scored_once_and_the_repeat_is_reported(tmp_path, script):
    a, b, c = write_inputs(tmp_path / "in", "x", count=3)
    spec = spec_of(tmp_path, script)
    descriptors = steps.partition(FileDataset(files=[a, b, a, c, b, a]), spec)
    header = read_manifest_header(spec.layout())
    assert header["input_files"] == 3 and header["duplicate_inputs_dropped"] == [a, b, a]
    assert len(descriptors) == 2

    steps.run_mini_batches([0, 1], spec)
    summary = steps.aggregate(spec)
    assert merged_lines(tmp_path) == ["x0", "x1", "x2"]
    assert summary["total_items"] == 3 and summary["duplicate_inputs_dropped"] == [a, b, a]


def test_a_relative_and_an_absolute_name_of_one_file_are_one_file(tmp_path, script):
    a, _, _ = write_inputs(tmp_path / "in", "x", count=3)
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in"), files=["x0.txt", a, "x1.txt"]), spec)
    header = read_manifest_header(spec.layout())
    assert header["input_files"] == 2 and header["duplicate_inputs_dropped"] == [a]


def test_summary_says_which_run_it_belongs_to(tmp_path, script):
    write_inputs(tmp_path / "in", "x")
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec, owner=OWNER_A)
    steps.run_mini_batches([0, 1], spec)
    summary = steps.aggregate(spec)
    assert summary["run_key"] == run_key(spec) and summary["owner"] == OWNER_A
    assert json.loads((tmp_path / "out" / "_parallelrun" / "summary.json").read_text()) == summary
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "out" / "_parallelrun" / "status").iterdir()]
    assert {s["run_key"] for s in statuses} == {run_key(spec)}


def test_a_failing_publish_is_reported_as_a_storage_error_not_the_scripts(tmp_path, script):
    write_inputs(tmp_path / "in", "x")
    spec = spec_of(tmp_path, script)
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    # The parts folder cannot be created: a file stands where it goes.
    (tmp_path / "out" / "_parallelrun" / "parts").write_text("in the way")

    with pytest.raises(StorageError) as info:
        steps.run_mini_batch(0, spec)
    message = str(info.value)
    assert message.startswith("mb-000000 was run (succeeded), but publishing its results")
    assert "not of the entry script" in message and "FileExistsError" in message
    assert not (tmp_path / "out" / "_parallelrun" / "status" / "mb-000000.json").exists()
