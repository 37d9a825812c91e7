"""A ParallelRunOperator DAG run by a real scheduler with the LocalExecutor, driven through the REST API.

``dag.test()`` runs the mapped tasks one after the other in the test process; here the
scheduler queues them and LocalExecutor workers run them side by side, so this is where
"at most ``node_count * process_count_per_node`` ``run()`` calls at once" is really put to the test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.airflow.real_airflow import RealAirflow, real_airflow  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(900)]

INPUTS = 8
SLEEP = 1.5
#: How long a run() call waits for a second one to start before it gives up: only bounds a hang.
#: Until two calls have overlapped once, each call waits for a partner, so "2 did overlap" holds
#: whenever the executor lets two run at once, however slow a busy machine makes it.
PARTNER_WAIT = 240

ENTRY_SCRIPT = f"""\
import argparse
import glob
import os
import time


def init():
    global calls_dir
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls_dir")
    args, _ = parser.parse_known_args()
    calls_dir = args.calls_dir
    with open(os.path.join(calls_dir, "init.log"), "a") as f:
        f.write(f"{{os.getpid()}}\\n")


def wait_for_a_partner(name):
    # Wait until another run() call is running too, unless two calls already overlapped once.
    overlapped, gave_up = os.path.join(calls_dir, "overlapped"), os.path.join(calls_dir, "gave_up")
    mine = os.path.join(calls_dir, name + ".running")
    deadline = time.time() + {PARTNER_WAIT}
    while not (os.path.exists(overlapped) or os.path.exists(gave_up)):
        if set(glob.glob(os.path.join(calls_dir, "*.running"))) - {{mine}}:
            open(overlapped, "a").close()
        elif time.time() > deadline:
            open(gave_up, "a").close()  # the calls after this one do not wait either
        else:
            time.sleep(0.05)


def run(mini_batch):
    name = os.path.basename(mini_batch[0])
    start = time.time()
    open(os.path.join(calls_dir, name + ".running"), "w").close()
    wait_for_a_partner(name)
    time.sleep({SLEEP})
    end = time.time()
    os.remove(os.path.join(calls_dir, name + ".running"))
    print(f"scoring {{name}} in worker {{os.getpid()}}")
    with open(os.path.join(calls_dir, name + ".call"), "a") as f:
        f.write(f"{{start}},{{end}},{{os.getpid()}}\\n")
    return list(mini_batch)
"""

DAG_SOURCE = """\
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None, catchup=False):
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path={inputs!r}, pattern="*.txt"),
        output_path={output!r} + "/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script={script!r},
            mini_batch_size="1",
            error_threshold=0,
            node_count=1,
            process_count_per_node=2,
            run_invocation_timeout=600,  # run() may wait for a partner (PARTNER_WAIT)
        ),
        arguments=["--calls_dir", {calls!r}],
    )
"""


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Return the largest number of intervals open at one moment (an end before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_mapped_mini_batches_run_two_at_a_time_under_a_real_scheduler(
    real_airflow: RealAirflow,  # noqa: F811
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = [inputs / f"item_{i:02d}.txt" for i in range(INPUTS)]
    for i, path in enumerate(paths):
        path.write_text(f"item {i}\n")
    calls = tmp_path / "calls"
    calls.mkdir()
    script = tmp_path / "score_entry.py"
    script.write_text(ENTRY_SCRIPT)
    output = tmp_path / "out"

    dag_id = "real_scheduler_parallel_run"
    real_airflow.add_dag(
        dag_id,
        DAG_SOURCE.format(
            dag_id=dag_id, inputs=str(inputs), output=str(output), script=str(script), calls=str(calls)
        ),
    )
    real_airflow.wait_for_dag(dag_id)
    run_id = real_airflow.trigger(dag_id)
    state = real_airflow.wait_for_run(dag_id, run_id, timeout=600)
    tis = real_airflow.task_instances(dag_id, run_id)
    assert state == "success", [(t["task_id"], t["map_index"], t["state"]) for t in tis]

    # (a) the merged output lists every input, in input order
    merged = output / run_id / "parallel_run_step.txt"
    assert merged.read_text().splitlines() == [str(p) for p in paths]

    # (b) at most node_count * process_count_per_node = 2 run() calls at once, and 2 did overlap
    records = [line.split(",") for f in sorted(calls.glob("*.call")) for line in f.read_text().splitlines()]
    assert len(records) == INPUTS, records  # one call per mini-batch, none retried
    intervals = [(float(start), float(end)) for start, end, _pid in records]
    assert max_overlap(intervals) <= 2, sorted(intervals)
    assert (calls / "overlapped").exists(), "no run() call saw a second one running within PARTNER_WAIT"
    assert max_overlap(intervals) == 2, sorted(intervals)

    # (c) init() ran once per warm worker process, at most process_count_per_node = 2, not per mini-batch
    inits = (calls / "init.log").read_text().split()
    assert 1 <= len(inits) <= 2 and len(set(inits)) == len(inits), inits
    assert {pid for *_, pid in records} == set(inits)

    # (d) a warm worker prints into the log of the task instance whose mini-batch it runs
    for i, path in enumerate(paths):
        (log,) = real_airflow.logs.glob(
            f"dag_id={dag_id}/run_id=*/task_id=score.run/map_index={i}/attempt=1.log"
        )
        printed = [name for name in (p.name for p in paths) if f"scoring {name} in worker" in log.read_text()]
        assert printed == [path.name], (i, printed)

    # (e) the API lists 8 mapped run task instances, named after their mini-batches
    runs = sorted((t for t in tis if t["task_id"] == "score.run"), key=lambda t: t["map_index"])
    assert [t["map_index"] for t in runs] == list(range(INPUTS))
    assert all(t["state"] == "success" for t in runs), runs
    names = [t["rendered_map_index"] for t in runs]
    assert all(name.startswith("mb-00000") for name in names), names
    assert names == [f"mb-{i:06d} 1 file item_{i:02d}.txt" for i in range(INPUTS)]
    others = {t["task_id"]: t["state"] for t in tis if t["task_id"] != "score.run"}
    assert others == {"score.partition": "success", "score.aggregate": "success"}

    print(
        f"\nreal Airflow: start-up {real_airflow.startup_seconds:.1f}s, "
        f"test body {time.monotonic() - started:.1f}s, run() peak overlap {max_overlap(intervals)}"
    )
