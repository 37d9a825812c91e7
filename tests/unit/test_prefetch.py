"""Remote inputs of the next mini-batches are fetched while run() scores (core/inputs/prefetch.py).

On the real S3 (moto) and Azure Blob (Azurite) servers, reached through ``FaultyProxy`` with
added latency. The entry script proves the overlap by what it sees, not by timing: while it
runs a mini-batch it waits for the next one's files to appear in the task's scratch folder
(they can only be there if they were fetched while it runs), and looks whether any mini-batch
beyond the bound is there too.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.failpoints import ENV as FAILPOINTS
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.location import clear_storage_options, set_storage_options

FILES_PER_MINI_BATCH = 3
MINI_BATCHES = 4

# While run() scores mini-batch N, it waits (up to $WAIT_SECONDS) until every file of N+1 is in
# the scratch folder, then records which other mini-batches' folders are there.
WATCHING_SCRIPT = """
    import json, os, time

    def init():
        pass

    def run(mini_batch):
        started = time.time()
        own = os.path.dirname(os.path.dirname(mini_batch[0]))  # <scratch>/input/<mb>
        inputs = os.path.dirname(own)
        index = int(os.path.basename(own).split("-")[1])
        nxt = os.path.join(inputs, f"mb-{index + 1:06d}")
        total = int(os.environ["MINI_BATCHES"])
        seen_next = None
        if index + 1 < total:
            deadline = time.time() + float(os.environ["WAIT_SECONDS"])
            while time.time() < deadline:
                staged = [n for _, _, names in os.walk(nxt) for n in names]
                if len(staged) == int(os.environ["FILES"]):
                    seen_next = time.time()
                    break
                time.sleep(0.02)
        time.sleep(0.2)
        present = sorted(n for n in os.listdir(inputs) if n != os.path.basename(own))
        with open(os.environ["RECORD"], "a") as f:
            f.write(json.dumps({"mb": index, "started": started, "seen_next": seen_next,
                                "present": present, "ended": time.time()}) + "\\n")
        return [os.path.basename(p) + ":" + open(p).read() for p in mini_batch]
"""


@pytest.fixture
def slow_store(object_store):
    """The test's folder on the store, its inputs reached through a proxy adding 30 ms per request."""
    slow = object_store.behind_proxy(delay=0.03)
    fs = object_store.fs()
    for i in range(MINI_BATCHES * FILES_PER_MINI_BATCH):
        fs.pipe_file(object_store.path("in", f"f{i:02d}.txt"), f"text {i}".encode())
    set_storage_options(object_store.url("in"), slow.fs())
    yield object_store
    clear_storage_options()


def make_spec(tmp_path: Path, store, *, ahead: int = 1, wait: float = 30.0, monkeypatch) -> RunSpec:
    script = tmp_path / "entry.py"
    script.write_text(textwrap.dedent(WATCHING_SCRIPT))
    record = tmp_path / "record.jsonl"
    for name, value in {
        "RECORD": str(record),
        "WAIT_SECONDS": str(wait),
        "FILES": str(FILES_PER_MINI_BATCH),
        "MINI_BATCHES": str(MINI_BATCHES),
    }.items():
        monkeypatch.setenv(name, value)
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(
            entry_script="x.py",
            mini_batch_size=str(FILES_PER_MINI_BATCH),
            warm_workers=False,
            prefetch_mini_batches=ahead,
        ),
        entry_script=str(script),
    )
    descriptors = steps.partition(FileDataset(path=store.url("in")), spec)
    assert len(descriptors) == MINI_BATCHES
    return spec


def records(tmp_path: Path) -> dict[int, dict]:
    lines = (tmp_path / "record.jsonl").read_text().splitlines()
    return {r["mb"]: r for r in map(json.loads, lines)}


def merged(tmp_path: Path) -> list[str]:
    return (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()


EVERY_ROW = sorted(f"f{i:02d}.txt:text {i}" for i in range(MINI_BATCHES * FILES_PER_MINI_BATCH))


@pytest.mark.slow
@pytest.mark.parametrize("ahead", [1, 2])
def test_the_next_mini_batches_are_fetched_while_run_scores_and_no_more(
    slow_store, tmp_path, monkeypatch, caplog, ahead
):
    spec = make_spec(tmp_path, slow_store, ahead=ahead, monkeypatch=monkeypatch)
    with caplog.at_level(logging.INFO, logger="airflow_parallelrun.core.inputs.prefetch"):
        statuses = steps.run_mini_batches(range(MINI_BATCHES), spec)
    assert [s.status for s in statuses] == ["succeeded"] * MINI_BATCHES
    seen = records(tmp_path)
    for index in range(MINI_BATCHES - 1):
        # Mini-batch N+1's files were all there while run() still scored mini-batch N ...
        assert seen[index]["seen_next"] is not None, (index, seen[index])
        assert seen[index]["seen_next"] < seen[index]["ended"]
        # ... and no mini-batch beyond the bound: N+1 .. N+ahead only.
        allowed = {f"mb-{i:06d}" for i in range(index + 1, min(index + 1 + ahead, MINI_BATCHES))}
        assert set(seen[index]["present"]) == allowed, (index, seen[index]["present"])
    # The fetch record: mini-batch N+1's fetch started after N's run() started, before it returned.
    started = {
        r.message.split()[4]: r.created for r in caplog.records if r.message.startswith("fetching the inputs")
    }
    assert sorted(started) == [f"mb-{i:06d}" for i in range(1, MINI_BATCHES)]
    for index in range(1, MINI_BATCHES):
        before = seen[index - ahead] if index - ahead >= 0 else seen[0]
        assert started[f"mb-{index:06d}"] < before["ended"]
    steps.aggregate(spec)
    assert sorted(merged(tmp_path)) == EVERY_ROW
    # What was fetched is gone with the task.
    assert not [p for p in Path(spec.output_path).rglob("input")]


@pytest.mark.slow
def test_without_prefetch_the_next_mini_batch_is_fetched_at_its_turn(slow_store, tmp_path, monkeypatch):
    spec = make_spec(tmp_path, slow_store, ahead=0, wait=1.0, monkeypatch=monkeypatch)
    statuses = steps.run_mini_batches(range(2), spec)
    assert [s.status for s in statuses] == ["succeeded"] * 2
    seen = records(tmp_path)
    assert seen[0]["seen_next"] is None and seen[0]["present"] == []


@pytest.mark.slow
def test_a_failed_fetch_fails_its_own_mini_batch_only(slow_store, tmp_path, monkeypatch):
    spec = make_spec(tmp_path, slow_store, wait=3.0, monkeypatch=monkeypatch)
    # Gone after the listing: mini-batch 1's fetch, started while 0 runs, fails on it.
    slow_store.fs().rm_file(slow_store.path("in", "f04.txt"))
    statuses = steps.run_mini_batches(range(MINI_BATCHES), spec)
    assert [s.status for s in statuses] == ["succeeded", "failed", "succeeded", "succeeded"]
    failed = statuses[1]
    assert failed.error_category == "input" and "f04.txt" in failed.error_message
    assert failed.tries == 1 and failed.items_failed == FILES_PER_MINI_BATCH
    assert statuses[0].items_succeeded == FILES_PER_MINI_BATCH
    rows = sorted(
        line
        for p in (tmp_path / "out" / "_parallelrun" / "parts").iterdir()
        for line in p.read_text().splitlines()
    )
    assert rows == [r for r in EVERY_ROW if not r.startswith(("f03", "f04", "f05"))]


CHILD = """
import json, os, sys
from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.hooks.storage import use_connections

args = json.loads(sys.argv[1])
use_connections(args["input"], args["conn_id"], None, None)
spec = RunSpec(
    output_path=args["output"],
    config=ParallelRunConfig(entry_script="x.py", mini_batch_size=args["size"], warm_workers=False),
    entry_script=args["script"],
)
steps.run_mini_batches(range(args["count"]), spec)
"""


@pytest.mark.slow
def test_a_task_killed_while_fetching_ahead_leaves_every_row_once_after_its_retry(
    slow_store, tmp_path, monkeypatch
):
    spec = make_spec(tmp_path, slow_store, wait=3.0, monkeypatch=monkeypatch)
    marker = tmp_path / "stopped"
    points = tmp_path / "points.json"
    points.write_text(json.dumps({"part_published:mb-000001": str(marker)}))
    proxy = slow_store.behind_proxy(delay=0.03, conn_id=slow_store.conn_id + "_child")
    env = {
        **os.environ,
        **proxy.env(),
        FAILPOINTS: str(points),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    args = {
        "input": slow_store.url("in"),
        "conn_id": proxy.conn_id,
        "output": spec.output_path,
        "size": str(FILES_PER_MINI_BATCH),
        "script": spec.entry_script,
        "count": MINI_BATCHES,
    }
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], env=env)
    try:
        while not marker.exists():
            assert child.poll() is None, "the task ended before the failpoint"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # Killed after mini-batch 1's part, before its status, with mini-batch 2 fetched ahead.
    assert records(tmp_path)[1]["present"] == ["mb-000002"]
    again = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env, timeout=300)
    assert again.returncode == 0
    steps.aggregate(spec)
    assert sorted(merged(tmp_path)) == EVERY_ROW
    # The retry's scratch folder is gone; the killed one's is all that is left, for the sweep.
    assert len(list((tmp_path / "tmp").glob("parallelrun-*"))) == 1
