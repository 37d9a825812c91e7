"""The progress record of each run task, the whole run's sum of them, its log lines and the watchdog.

Real entry scripts in real worker processes, on local disk; the record is read back from the run's
storage as another engineer's UI reads it (``read_progress``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.execution.progress_monitor import ProgressTimeout
from airflow_parallelrun.core.outputs.progress import read_progress
from tests.unit.test_run_mini_batch import make_input, make_run, state, write_script

# run() waits for $GATE to exist before it scores the mini-batch holding f3.txt (mb-000001).
GATED_SCRIPT = """
    import os
    import time

    def run(mini_batch):
        if any(p.endswith("f3.txt") for p in mini_batch):
            while not os.path.exists(os.environ["GATE"]):
                time.sleep(0.05)
        return [os.path.basename(p) for p in mini_batch[:2]]
"""

HANGING_SCRIPT = """
    import time

    def run(mini_batch):
        time.sleep(3600)
        return list(mini_batch)
"""


def record(tmp_path: Path, task: str = "task-000007") -> dict:
    return json.loads(state(tmp_path, "progress", f"{task}.json").read_text())


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_the_record_follows_each_finished_mini_batch_and_read_progress_sums_it(tmp_path):
    make_input(tmp_path / "in")
    spec = make_run(
        tmp_path, write_script(tmp_path, GATED_SCRIPT), environment_variables={"GATE": str(tmp_path / "gate")}
    )
    layout = spec.layout()
    before = read_progress(layout)
    assert (before.mini_batches_total, before.items_total, before.mini_batches_done) == (2, 5, 0)
    assert before.eta_seconds is None and not before.finished

    task = threading.Thread(
        target=steps.run_mini_batches, args=([0, 1], spec), kwargs={"task_key": "task-000007"}
    )
    task.start()
    try:
        # mb-000000 done (3 items, 1 short), mb-000001 running and held at the gate.
        wait_for(
            lambda: state(tmp_path, "progress", "task-000007.json").exists() and record(tmp_path)["running"]
        )
        # Between mb-000000's end and mb-000001's start the record briefly says nothing is running.
        wait_for(lambda: record(tmp_path)["mini_batches_done"] == 1 and record(tmp_path)["running"])
        mid = record(tmp_path)
        assert mid["running"] == ["mb-000001"] and not mid["finished"]
        assert (mid["items_done"], mid["items_failed"], mid["mini_batches_total"]) == (3, 1, 2)
        progress = read_progress(layout)
        assert (progress.mini_batches_done, progress.items_done, progress.tasks) == (1, 3, 1)
        assert progress.eta_seconds is not None and progress.eta_seconds > 0
    finally:
        (tmp_path / "gate").touch()
        task.join()

    end = record(tmp_path)
    assert end["finished"] and end["running"] == []
    assert (end["mini_batches_done"], end["items_done"], end["items_failed"]) == (2, 5, 1)
    assert end["started"] <= end["updated"]
    done = read_progress(layout)
    assert (done.mini_batches_done, done.items_failed, done.tasks_finished) == (2, 1, 1)
    assert not done.finished  # the summary still says "running": the aggregate has not run
    assert set(done.as_dict()) >= {
        "mini_batches_total",
        "mini_batches_done",
        "mini_batches_failed",
        "mini_batches_retried",
        "items_total",
        "items_done",
        "items_failed",
        "started",
        "updated",
        "items_per_second",
        "mini_batches_per_second",
        "eta_seconds",
        "finished",
    }


def test_read_progress_says_finished_once_the_aggregate_wrote_the_summary(tmp_path):
    make_input(tmp_path / "in")
    spec = make_run(
        tmp_path,
        write_script(tmp_path, GATED_SCRIPT),
        error_threshold=-1,
        environment_variables={"GATE": str(tmp_path)},
    )
    steps.run_mini_batches([0], spec, task_key="task-000000")
    steps.run_mini_batches([1], spec, task_key="task-000001")
    assert not read_progress(spec.layout()).finished
    steps.aggregate(spec)
    progress = read_progress(spec.layout())
    assert progress.finished and progress.tasks == 2 and progress.eta_seconds == 0


def test_a_new_partition_drops_the_records_of_the_run_before(tmp_path):
    make_input(tmp_path / "in")
    spec = make_run(
        tmp_path, write_script(tmp_path, GATED_SCRIPT), environment_variables={"GATE": str(tmp_path)}
    )
    steps.run_mini_batches([0, 1], spec, task_key="task-000000")
    assert read_progress(spec.layout()).mini_batches_done == 2
    make_run(tmp_path, write_script(tmp_path, GATED_SCRIPT))
    assert read_progress(spec.layout()).mini_batches_done == 0
    assert not state(tmp_path, "progress", "task-000000.json").exists()


@pytest.mark.slow
def test_each_interval_the_task_logs_azures_line_for_itself_and_the_whole_run(tmp_path, caplog):
    make_input(tmp_path / "in")
    spec = make_run(
        tmp_path,
        write_script(tmp_path, GATED_SCRIPT),
        progress_log_interval=0.2,
        environment_variables={"GATE": str(tmp_path / "gate")},
    )
    caplog.set_level(logging.INFO, logger="airflow_parallelrun.core.execution.progress_monitor")
    threading.Timer(1.5, (tmp_path / "gate").touch).start()
    steps.run_mini_batches([0, 1], spec, task_key="task-000003")
    messages = [r.getMessage() for r in caplog.records]
    waiting = "task-000003: Processed 1 of 2 mini batches (3 items, 1 failed) in "
    assert any(m.startswith(waiting) and "items/s, estimated remaining time 0" in m for m in messages), (
        messages
    )
    assert any(m.startswith("whole run: Processed 1 of 2 mini batches (3 items, 1 failed)") for m in messages)
    assert any(
        m.startswith("task-000003: Processed 2 of 2 mini batches (5 items, 1 failed)") for m in messages
    )


@pytest.mark.slow
def test_a_task_stuck_longer_than_progress_update_timeout_kills_its_worker_and_fails(tmp_path):
    make_input(tmp_path / "in")
    # run() hangs far longer than both: the watchdog, not run_invocation_timeout, must end it.
    spec = make_run(
        tmp_path,
        write_script(tmp_path, HANGING_SCRIPT),
        run_invocation_timeout=600,
        progress_update_timeout=2,
    )
    started = time.monotonic()
    with pytest.raises(ProgressTimeout) as caught:
        steps.run_mini_batches([0, 1], spec, task_key="task-000000")
    assert time.monotonic() - started < 60
    message = str(caught.value)
    for part in ("progress_update_timeout=2s", "mb-000000", "task-000000", "raise progress_update_timeout"):
        assert part in message, message
    status = json.loads(state(tmp_path, "status", "mb-000000.json").read_text())
    assert status["status"] == "failed" and status["error_category"] == "progress_timeout"
    assert status["tries"] == 1  # no further try after the watchdog
    assert not state(tmp_path, "status", "mb-000001.json").exists()
    assert record(tmp_path, "task-000000")["finished"]


def test_progress_settings_are_checked(tmp_path):
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"progress_update_timeout=0 is invalid.*or None for no limit"):
        ParallelRunConfig(entry_script="s.py", progress_update_timeout=0)
    with pytest.raises(ConfigError, match=r"progress_log_interval=-1 is invalid.*or 0 for none"):
        ParallelRunConfig(entry_script="s.py", progress_log_interval=-1)
    config = ParallelRunConfig(entry_script="s.py", progress_update_timeout=5.5, progress_log_interval=0)
    assert ParallelRunConfig.from_header(config.to_header()) == config


def test_the_summary_gives_each_steps_wall_time_and_the_time_between_them(tmp_path):
    make_input(tmp_path / "in")
    spec = make_run(
        tmp_path, write_script(tmp_path, GATED_SCRIPT), environment_variables={"GATE": str(tmp_path)}
    )
    time.sleep(0.3)  # the "scheduling" between partition and run
    steps.run_mini_batches([0], spec, task_key="task-000000")
    steps.run_mini_batches([1], spec, task_key="task-000001")
    time.sleep(0.3)  # and between run and aggregate
    summary = steps.aggregate(spec)
    times = summary["steps"]
    assert json.loads(state(tmp_path, "summary.json").read_text())["steps"] == times
    partition, run, aggregate = times["partition"], times["run"], times["aggregate"]
    records = [record(tmp_path, f"task-00000{i}") for i in (0, 1)]
    assert run["started"] == round(min(r["started"] for r in records), 3)
    assert run["ended"] == round(max(r["updated"] for r in records), 3)
    assert partition["ended"] + 0.3 <= run["started"] and run["ended"] + 0.3 <= aggregate["started"]
    for step in (partition, run, aggregate):
        assert step["seconds"] == pytest.approx(step["ended"] - step["started"], abs=0.002)
        assert step["seconds"] > 0
    gaps = run["started"] - partition["ended"] + aggregate["started"] - run["ended"]
    assert times["airflow_overhead_seconds"] == pytest.approx(gaps, abs=0.002)
    assert times["airflow_overhead_seconds"] >= 0.6


@pytest.mark.parametrize("store", ["local", "memory"])
def test_a_remote_store_gets_at_most_one_record_write_a_second(tmp_path, monkeypatch, store):
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.execution import progress_monitor
    from airflow_parallelrun.core.inputs.datasets import FileDataset
    from airflow_parallelrun.core.spec import RunSpec

    make_input(tmp_path / "in", count=12)
    output = str(tmp_path / "out") if store == "local" else f"memory://progress-{tmp_path.name}/out"
    spec = RunSpec(
        output_path=output,
        config=ParallelRunConfig(
            entry_script="x.py",
            mini_batch_size="1",
            progress_log_interval=0,
            environment_variables={"GATE": str(tmp_path)},
        ),
        entry_script=str(write_script(tmp_path, GATED_SCRIPT)),
    )
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    writes: list[dict] = []
    real = progress_monitor.write_record

    def counted(out, path, record):
        writes.append(record)
        real(out, path, record)

    monkeypatch.setattr(progress_monitor, "write_record", counted)
    started = time.monotonic()
    steps.run_mini_batches(range(12), spec, task_key="task-000000")
    seconds = time.monotonic() - started
    assert writes[-1]["finished"] and writes[-1]["mini_batches_done"] == 12
    done = [w["mini_batches_done"] for w in writes]
    assert done == sorted(done) and done[0] == 0
    if store == "local":
        # Written as mini-batches start and finish (changes that come during one write share the next).
        assert len(writes) > 2
    else:
        assert len(writes) <= seconds / progress_monitor.REMOTE_WRITE_INTERVAL + 2, (len(writes), seconds)
        assert len(writes) < 12
    assert read_progress(spec.layout()).mini_batches_done == 12
