"""A task publishes each mini-batch in a background thread while its worker runs the next one.

``core/execution/publishing.py``. Most tests run a real task (``steps.run_mini_batches``, a real
worker process) on moto's S3 server behind ``FaultyProxy``, which delays requests or answers
some with a fault, and records every request it answers: the status of one mini-batch is still
being written while ``run()`` of the next has started; a publish that keeps failing fails the
task and no other mini-batch's output is lost; the abort decision waits for a failed
mini-batch's dead letter; a ``summary_only`` script's files of one mini-batch survive the next
try; and a task killed while a publish is in flight leaves every row exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import StorageError
from airflow_parallelrun.core.execution.publishing import Publisher
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.location import clear_storage_options, set_storage_options
from tests.object_stores import ObjectStore
from tests.servers.proxy import Fault

ITEMS = 4

SCRIPT = """
import os, time

def run(mini_batch):
    started = time.monotonic()
    time.sleep({sleep})
    with open({times!r}, "a") as f:
        f.write(f"{{os.path.basename(mini_batch[0])}} {{started}} {{time.monotonic()}}\\n")
    if os.path.basename(mini_batch[0]) in {fail!r}:
        raise ValueError("cannot score " + mini_batch[0])
    return [open(p).read() for p in mini_batch]
"""

CHILD = """
import sys
from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.location import set_storage_options
from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

url, conn_id, script = sys.argv[1:]
set_storage_options(url, ParallelRunStorageHook(conn_id).filesystem(url))
config = ParallelRunConfig(entry_script="score.py", mini_batch_size="1", run_max_try=1)
steps.run_mini_batches(range(4), RunSpec(output_path=url + "/out", config=config, entry_script=script))
"""


# --- the publisher itself -----------------------------------------------------------------------


def test_publishes_run_in_order_at_most_two_pending_and_a_failure_is_raised_once() -> None:
    publisher, done, pending, raised = Publisher(depth=2), [], [], []
    release = threading.Event()

    def job(n: int) -> None:
        if n == 0:
            release.wait(5)
        if n == 1:
            raise StorageError("the store refused mb 1")
        done.append(n)

    threading.Timer(0.3, release.set).start()
    for n in range(4):
        try:
            publisher.submit(f"mb-{n}", lambda n=n: job(n))
        except StorageError as exc:
            raised.append(str(exc))
        pending.append(len(publisher.pending))
    try:
        publisher.wait()
    except StorageError as exc:
        raised.append(str(exc))
    publisher.close()
    # Raised once, in the caller's thread; the publishes after it were still made, in order.
    assert raised == ["the store refused mb 1"]
    assert done == [0, 2, 3]
    assert max(pending) <= 2 and pending[1] == 2  # mb-2 waited for mb-0 to leave a place


# --- a real task on S3 ----------------------------------------------------------------------------


@pytest.fixture
def storage() -> Iterator[None]:
    yield
    clear_storage_options()


def s3_run(
    store: ObjectStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    delay: float,
    fault: Fault | None = None,
    sleep: float = 0.0,
    fail: tuple[str, ...] = (),
    **config: object,
) -> tuple[RunSpec, ObjectStore, Path]:
    """Partition ``ITEMS`` one-file mini-batches on S3 behind a proxy; return the spec, the proxied
    store (its proxy records the requests) and the file where ``run()`` notes its times."""
    import s3fs

    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    for i in range(ITEMS):
        store.put(f"in/item{i}.txt", f"v{i}".encode())
    slow = store.behind_proxy(delay=delay, fault=fault)
    connection = slow.connection()  # botocore's own tries: one, so a fault reaches the package's retries
    connection["extra"]["config_kwargs"] = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{slow.conn_id.upper()}", json.dumps(connection))
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    set_storage_options(slow.url(), ParallelRunStorageHook(slow.conn_id).filesystem(slow.url()))
    times = tmp_path / "times.txt"
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(SCRIPT.format(sleep=sleep, times=str(times), fail=list(fail))))
    spec = RunSpec(
        output_path=slow.url("out"),
        config=ParallelRunConfig(entry_script="score.py", mini_batch_size="1", run_max_try=1, **config),
        entry_script=str(script),
    )
    assert len(steps.partition(FileDataset(path=slow.url("in"), pattern="*.txt"), spec)) == ITEMS
    return spec, slow, times


def run_spans(times: Path) -> dict[int, tuple[float, float]]:
    """Return each mini-batch's ``run()`` start and end (``time.monotonic()``, one clock on Linux)."""
    spans = {}
    for line in times.read_text().splitlines():
        name, start, end = line.split()
        spans[int(name.removeprefix("item").removesuffix(".txt"))] = (float(start), float(end))
    return spans


def stored(store: ObjectStore, *parts: str) -> list[str]:
    fs = store.fs()
    folder = store.path("out", "_parallelrun", *parts)
    return sorted(p.rsplit("/", 1)[1] for p in fs.ls(folder, detail=False)) if fs.exists(folder) else []


def merged_rows(spec: RunSpec) -> list[str]:
    steps.aggregate(spec)
    fs, out = spec.layout().output.fs, spec.layout().output.path
    return fs.cat_file(f"{out}/parallel_run_step.txt").decode().split()


@pytest.mark.slow
def test_a_mini_batch_is_published_while_the_next_one_runs_with_fewer_requests(
    s3_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: None
) -> None:
    spec, slow, times = s3_run(s3_store, tmp_path, monkeypatch, delay=0.3, sleep=0.3)
    started = time.monotonic()
    statuses = steps.run_mini_batches(range(ITEMS), spec)
    runs = run_spans(times)
    spans = [s for s in slow.proxies[0].spans if s[0] >= started]

    # The task returned once every mini-batch was published: statuses and parts are all there.
    assert [s.status for s in statuses] == ["succeeded"] * ITEMS and all(s.part for s in statuses)
    assert stored(s3_store, "status") == [f"mb-{i:06d}.json" for i in range(ITEMS)]
    # Mini-batch N's status was still being written when run() of N+1 had started.
    written = {
        int(p.rsplit("mb-", 1)[1][:6]): end for _, end, m, p in spans if m == "PUT" and "/status/mb-" in p
    }
    assert all(written[n] > runs[n + 1][0] for n in range(ITEMS - 1)), (written, runs)
    # Requests of the state (statuses, abort marker, dead letters, manifest, parts): no lookup
    # before a record is read or deleted. Per mini-batch: the abort marker between two runs; the
    # run-key check, part, dead-letter delete and status in publishing; its earlier status at
    # the start. Before: 9 or 10 a mini-batch, all between two runs (a missing object's
    # exists() is a HEAD and a LIST, and s3fs read a record's size before the record).
    # The progress record and the resource samples are written by threads of their own, at most
    # once a second (tests/unit/test_progress.py counts those): not state, not counted here.
    watched = ("/progress/", "/perf/")
    state = [(m, p) for _, _, m, p in spans if "_parallelrun" in p and not any(w in p for w in watched)]
    assert not [r for r in state if r[0] == "HEAD" and "/manifest/shard-" not in r[1]], state
    assert len(state) <= 3 + 6 * ITEMS, state


@pytest.mark.slow
@pytest.mark.parametrize("failing", [1, ITEMS - 1])
def test_a_publish_that_keeps_failing_fails_the_task_and_loses_no_other_output(
    s3_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: None, failing: int
) -> None:
    monkeypatch.setenv("PARALLELRUN_STORAGE_RETRY_SECONDS", "1")
    refuse = {"on": True}

    def throttle_one_status(number: int, method: str, path: str) -> str | None:
        hit = method == "PUT" and f"/_parallelrun/status/mb-{failing:06d}.json" in path
        return "throttle" if hit and refuse["on"] else None

    spec, _, times = s3_run(s3_store, tmp_path, monkeypatch, delay=0.05, fault=throttle_one_status)
    with pytest.raises(StorageError, match=f"mb-{failing:06d} was run"):
        steps.run_mini_batches(range(ITEMS), spec)
    ran = set(run_spans(times))
    published = {int(name[3:9]) for name in stored(s3_store, "status")}
    # Every mini-batch that ran was published, but the one whose status could not be written.
    assert failing in ran and published == ran - {failing}
    assert len(stored(s3_store, "parts")) >= len(published)

    # The task's retry runs only what has no status, and every row is there once.
    refuse["on"] = False
    times.write_text("")
    statuses = steps.run_mini_batches(range(ITEMS), spec)
    assert all(s.succeeded for s in statuses)
    assert set(run_spans(times)) == set(range(ITEMS)) - published
    assert merged_rows(spec) == [f"v{i}" for i in range(ITEMS)]


@pytest.mark.slow
def test_the_abort_decision_waits_for_the_failed_mini_batchs_dead_letter(
    s3_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: None
) -> None:
    def slow_dead_letter(number: int, method: str, path: str) -> str | None:
        if method == "PUT" and "/_parallelrun/errors/mb-000001.json" in path:
            time.sleep(1.5)  # the dead letter lands well after the mini-batch was handed over
        return None

    spec, _, times = s3_run(
        s3_store,
        tmp_path,
        monkeypatch,
        delay=0.0,
        fault=slow_dead_letter,
        fail=("item1.txt",),
        error_threshold=-1,
        allowed_failed_count=0,
    )
    statuses = steps.run_mini_batches(range(ITEMS), spec)
    # One failed mini-batch exceeds allowed_failed_count=0: the task aborts the run at once.
    assert [s.status for s in statuses] == ["succeeded", "failed", "skipped", "skipped"]
    assert sorted(run_spans(times)) == [0, 1]
    assert stored(s3_store, "errors") == ["mb-000001.json"]
    assert "abort.json" in stored(s3_store)


SUMMARY_ONLY = """
import os
from airflow_parallelrun import EntryScript

def run(mini_batch):
    script = EntryScript()
    with open(os.path.join(script.output_dir, script.mini_batch_id + ".pred"), "w") as f:
        f.write("scored " + open(mini_batch[0]).read())
    return list(mini_batch)
"""


@pytest.mark.slow
def test_summary_only_files_of_a_mini_batch_in_publishing_survive_the_next_try(
    s3_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: None
) -> None:
    spec, _, _ = s3_run(s3_store, tmp_path, monkeypatch, delay=0.3, output_action="summary_only")
    Path(spec.entry_script).write_text(textwrap.dedent(SUMMARY_ONLY))
    assert all(s.succeeded for s in steps.run_mini_batches(range(ITEMS), spec))
    fs = s3_store.fs()
    for i in range(ITEMS):
        assert fs.cat_file(s3_store.path("out", f"mb-{i:06d}.pred")) == f"scored v{i}".encode()


@pytest.mark.slow
def test_a_task_killed_while_a_publish_is_in_flight_leaves_every_row_once(
    s3_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: None
) -> None:
    spec, slow, times = s3_run(s3_store, tmp_path, monkeypatch, delay=0.05)
    marker = tmp_path / "stopped"
    points = tmp_path / "points.json"
    # The status of mb-000001 is about to be put, in the publishing thread, while mb-000002 runs.
    points.write_text(json.dumps({"replace:mb-000001.json": str(marker)}))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, slow.url(), slow.conn_id, spec.entry_script],
        env={**os.environ, "PARALLELRUN_FAILPOINTS": str(points)},
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the task went past the point or failed"
            assert time.monotonic() < deadline, "the task never reached the point"
            time.sleep(0.05)
        os.kill(int(marker.read_text()), signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    # Killed between the part and the status of mb-000001: its part is there, its status is not.
    assert "mb-000001.json" not in stored(s3_store, "status")
    assert any(p.startswith("mb-000001.") for p in stored(s3_store, "parts"))

    times.write_text("")
    statuses = steps.run_mini_batches(range(ITEMS), spec)
    assert all(s.succeeded for s in statuses) and 1 in run_spans(times)
    assert merged_rows(spec) == [f"v{i}" for i in range(ITEMS)]
    # One part per mini-batch: the retry replaced mb-000001's, never added a second.
    assert len(stored(s3_store, "parts")) == ITEMS
