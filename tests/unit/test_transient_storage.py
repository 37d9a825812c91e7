"""Transient storage errors are retried with backoff, and count as failures only when they persist.

The storage is a real fsspec filesystem, registered under ``flaky://``: fsspec's memory
filesystem whose operations raise ``ConnectionError`` or ``TimeoutError`` the first times they
are called on each path, as an object store does when a connection drops. Only the outermost
operation of a call fails (``get_file`` fails, not the ``open`` it makes inside), and ``exists``
lets an error through as the cloud filesystems do, instead of answering False.

The retry policy is the engine's own (``core/storage/retries.py``), on a virtual clock whose sleeps pass
at once, so the tests do not sleep through the backoff or the retry budget.
"""

from __future__ import annotations

import multiprocessing
import threading
import types
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import InputError, StorageError
from airflow_parallelrun.core.execution import worker
from airflow_parallelrun.core.inputs.datasets import Dataset, FileDataset, TabularDataset
from airflow_parallelrun.core.inputs.minibatch import MiniBatch, TabularPiece
from airflow_parallelrun.core.inputs.reading import count_piece_items, read_table_rows
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage import retries
from tests.unit.virtual_clock import VirtualClock

_nesting = threading.local()


class FlakyFileSystem(MemoryFileSystem):
    """A memory filesystem whose operations fail ``failures`` times per path, then work."""

    protocol = ("flaky",)
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]

    failures: ClassVar[int] = 0
    # (operation, path) -> True: fails every time; -> None: never fails.
    always: ClassVar[Callable[[str, str], bool | None]] = staticmethod(lambda op, path: False)
    calls: ClassVar[Counter[tuple[str, str]]] = Counter()
    failed: ClassVar[Counter[tuple[str, str]]] = Counter()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str):
            path = path.removeprefix("flaky://")
        return super()._strip_protocol(path)

    @contextmanager
    def _operation(self, op: str, path: str) -> Iterator[None]:
        depth = getattr(_nesting, "depth", 0)
        if depth == 0:
            self._trip(op, self._strip_protocol(path))
        _nesting.depth = depth + 1
        try:
            yield
        finally:
            _nesting.depth = depth

    def _trip(self, op: str, path: str) -> None:
        key = (op, path)
        cls = type(self)
        cls.calls[key] += 1
        verdict = cls.always(op, path)
        if verdict or (verdict is not None and cls.calls[key] <= cls.failures):
            cls.failed[key] += 1
            error = ConnectionError if cls.failed[key] % 2 else TimeoutError
            raise error(f"flaky storage: {op} {path}: the connection dropped")

    def exists(self, path: str, **kwargs: Any) -> bool:
        with self._operation("exists", path):
            try:
                self.info(path)
            except FileNotFoundError:
                return False
            return True

    def info(self, path: str, **kwargs: Any) -> Any:
        with self._operation("info", path):
            return super().info(path, **kwargs)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        with self._operation("ls", path):
            return super().ls(path, detail=detail, **kwargs)

    def glob(self, path: str, maxdepth: int | None = None, **kwargs: Any) -> Any:
        with self._operation("glob", path):
            return super().glob(path, maxdepth=maxdepth, **kwargs)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> Any:
        with self._operation("cat_file", path):
            return super().cat_file(path, start=start, end=end, **kwargs)

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        with self._operation(f"open:{mode[0]}", path):
            return super().open(path, mode, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        with self._operation("pipe_file", path):
            super().pipe_file(path, value, mode=mode, **kwargs)

    def put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        with self._operation("put_file", rpath):
            super().put_file(lpath, rpath, **kwargs)

    def get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        with self._operation("get_file", rpath):
            super().get_file(rpath, lpath, **kwargs)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        with self._operation("rm", str(path)):
            super().rm(path, recursive=recursive, maxdepth=maxdepth)


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)

FILE_SCRIPT = """
def run(mini_batch):
    return [open(p).read().strip() for p in mini_batch]
"""

TABLE_SCRIPT = """
def run(mini_batch):
    return [f"{row.id} {row.text}" for row in mini_batch.itertuples()]
"""


@pytest.fixture(autouse=True)
def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """Keep the engine's retry policy (what is retried, for how long) but never sleep."""
    monkeypatch.delenv(retries.RETRY_SECONDS_ENV, raising=False)
    clock = VirtualClock()
    monkeypatch.setattr(retries, "clock", clock)
    return clock


def failing_calls(fs: type[FlakyFileSystem]) -> dict[tuple[str, str], int]:
    """Return how often each (operation, path) that failed was called.

    How long a persistent error takes is a property of these counts and of the virtual clock,
    not of the wall clock, which a busy machine stretches.
    """
    return {key: n for key, n in fs.calls.items() if fs.failed[key]}


@pytest.fixture
def flaky() -> Iterator[type[FlakyFileSystem]]:
    fs = FlakyFileSystem
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]
    fs.failures, fs.calls, fs.failed = 0, Counter(), Counter()
    fs.always = staticmethod(lambda op, path: False)
    yield fs
    fs.store.clear()
    fs.failures, fs.always = 0, staticmethod(lambda op, path: False)


def make_input(kind: str, root: str) -> tuple[Dataset, list[str], str]:
    """Write an input under ``flaky://root/in``; return its dataset, the merged lines, the size."""
    fs = fsspec.filesystem("flaky")
    if kind == "files":
        for i in range(7):
            fs.pipe_file(f"{root}/in/f{i}.txt", f"text {i}\n".encode())
        return FileDataset(path=f"flaky://{root}/in"), [f"text {i}" for i in range(7)], "3"
    table = pd.DataFrame({"id": range(60), "text": [f"t{i}" for i in range(60)]})
    if kind == "csv":
        fs.pipe_file(f"{root}/in/a.csv", table.to_csv(index=False).encode())
        fs.pipe_file(f"{root}/in/b.csv", table.assign(id=table.id + 100).to_csv(index=False).encode())
        lines = [f"{i} t{i}" for i in range(60)] + [f"{i + 100} t{i}" for i in range(60)]
        return TabularDataset(path=f"flaky://{root}/in"), lines, "200"
    with fs.open(f"{root}/in/a.parquet", "wb") as f:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), f, row_group_size=10)
    return (
        TabularDataset(path=f"flaky://{root}/in", format="parquet"),
        [f"{i} t{i}" for i in range(60)],
        "25 rows",
    )


def run_spec(tmp_path: Path, root: str, source: str, size: str, **config: Any) -> RunSpec:
    script = tmp_path / "entry.py"
    script.write_text(source)
    return RunSpec(
        output_path=f"flaky://{root}/out",
        config=ParallelRunConfig(entry_script="x.py", mini_batch_size=size, error_threshold=-1, **config),
        entry_script=str(script),
    )


def stored(root: str, *parts: str) -> str:
    """Read a file of the flaky store without going through (and tripping) the filesystem."""
    return FlakyFileSystem.store["/".join([root, *parts])].getvalue().decode()


@pytest.mark.parametrize("kind", ["files", "csv", "parquet"])
def test_transient_errors_are_retried_and_no_mini_batch_fails(tmp_path, flaky, kind):
    root = f"/run-{uuid.uuid4().hex}"
    dataset, expected, size = make_input(kind, root)
    spec = run_spec(tmp_path, root, FILE_SCRIPT if kind == "files" else TABLE_SCRIPT, size)
    flaky.failures = 2

    descriptors = steps.partition(dataset, spec)
    statuses = steps.run_mini_batches(range(len(descriptors)), spec)
    summary = steps.aggregate(spec)

    assert len(descriptors) >= 3
    assert [s.status for s in statuses] == ["succeeded"] * len(descriptors)
    # A storage retry is not a mini-batch try.
    assert [s.tries for s in statuses] == [1] * len(descriptors)
    assert summary["status"] == "succeeded" and summary["failed_items"] == 0
    assert summary["succeeded_items"] == len(expected)
    assert stored(root, "out", "parallel_run_step.txt").splitlines() == expected
    # Every kind of storage call failed on its way: listing, reading input and state, writing.
    failed_ops = {op for op, _ in flaky.failed}
    input_read = "get_file" if kind == "files" else "open:r"
    # (Existence checks go through info(): fsspec's generic exists() mistakes a timeout for "missing".)
    assert {"info", "glob", input_read, "cat_file", "pipe_file", "put_file"} <= failed_ops
    assert all(count == 2 for count in flaky.failed.values())


def test_a_transient_error_reading_a_part_does_not_fail_the_aggregate(tmp_path, flaky):
    root = f"/run-{uuid.uuid4().hex}"
    dataset, _, size = make_input("files", root)
    spec = run_spec(tmp_path, root, FILE_SCRIPT, size)
    steps.run_mini_batches(range(len(steps.partition(dataset, spec))), spec)
    flaky.failures = 1
    flaky.always = staticmethod(lambda op, path: None if op != "open:r" else False)
    assert steps.aggregate(spec)["status"] == "succeeded"


@pytest.mark.parametrize("op", ["info", "glob"])
def test_a_listing_error_that_persists_fails_the_partition_after_the_budget_and_clearly(
    tmp_path, flaky, op, virtual_clock
):
    root = f"/run-{uuid.uuid4().hex}"
    dataset, _, size = make_input("files", root)
    if op == "info":
        # A folder that the listing finds files in is not looked up besides; a file's path is.
        dataset = FileDataset(path=f"flaky://{root}/in/f0.txt")
    spec = run_spec(tmp_path, root, FILE_SCRIPT, size)
    flaky.always = staticmethod(lambda o, path: o == op and path.startswith(f"{root}/in"))
    with pytest.raises(StorageError) as info:
        steps.partition(dataset, spec)
    assert virtual_clock.time <= retries.DEFAULT_RETRY_SECONDS < virtual_clock.time + 10.5
    message = str(info.value)
    assert f"flaky://{root}/in" in message and "kept failing after retries" in message
    assert isinstance(info.value.__cause__, (ConnectionError, TimeoutError))
    assert max(n for (o, _), n in flaky.calls.items() if o == op) > 1, "the call was not retried"
    # Quickly: the first failing call costs the policy's tries once (no tries nested in tries), then stops.
    assert list(failing_calls(flaky).values()) == [len(virtual_clock.sleeps) + 1], failing_calls(flaky)


def test_an_input_read_error_that_persists_fails_the_task_as_a_storage_error_not_an_input_error(
    tmp_path, flaky, virtual_clock
):
    root = f"/run-{uuid.uuid4().hex}"
    dataset, expected, size = make_input("files", root)
    spec = run_spec(tmp_path, root, FILE_SCRIPT, size)
    descriptors = steps.partition(dataset, spec)
    broken = f"{root}/in/f4.txt"
    flaky.always = staticmethod(lambda op, path: op == "get_file" and path == broken)

    with pytest.raises(StorageError) as info:
        steps.run_mini_batches(range(len(descriptors)), spec)

    message = str(info.value)
    assert broken in message and "the connection dropped" in message
    assert retries.RETRY_SECONDS_ENV in message and "clear the task" in message
    assert isinstance(info.value.__cause__, (ConnectionError, TimeoutError))
    # Retried for the whole default budget (at least a minute), on the virtual clock.
    assert flaky.calls[("get_file", broken)] > 5
    assert retries.DEFAULT_RETRY_SECONDS >= 60 and virtual_clock.time <= retries.DEFAULT_RETRY_SECONDS
    assert virtual_clock.time + max(virtual_clock.sleeps) > retries.DEFAULT_RETRY_SECONDS
    # No status calls the input bad: the mini-batch is not counted as a permanent input failure.
    # Quickly: the broken file costs the policy's tries once, not tries nested in tries.
    assert failing_calls(flaky) == {("get_file", broken): len(virtual_clock.sleeps) + 1}
    status_of_broken = f"{root}/out/_parallelrun/status/mb-000001.json"
    assert status_of_broken not in flaky.store

    # Once the storage is back, clearing the task runs what is left, and nothing failed.
    flaky.always = staticmethod(lambda op, path: False)
    statuses = steps.run_mini_batches(range(len(descriptors)), spec)
    summary = steps.aggregate(spec)
    assert [s.status for s in statuses] == ["succeeded"] * 3
    assert (summary["failed_mini_batches"], summary["failed_items"]) == (0, 0)
    assert stored(root, "out", "parallel_run_step.txt").splitlines() == expected


def test_an_output_write_error_that_persists_fails_the_run_step_naming_the_path(
    tmp_path, flaky, virtual_clock
):
    root = f"/run-{uuid.uuid4().hex}"
    dataset, _, size = make_input("files", root)
    spec = run_spec(tmp_path, root, FILE_SCRIPT, size)
    steps.partition(dataset, spec)
    status_path = f"{root}/out/_parallelrun/status/mb-000000.json"
    flaky.always = staticmethod(lambda op, path: op == "pipe_file" and path == status_path)
    with pytest.raises(
        StorageError, match=r"kept failing after \d+ tries over .*the connection dropped"
    ) as info:
        steps.run_mini_batch(0, spec)
    assert f"write_bytes {status_path!r} kept failing" in str(info.value)
    assert retries.DEFAULT_RETRY_SECONDS - 10 <= virtual_clock.time <= retries.DEFAULT_RETRY_SECONDS
    # The policy's tries once, not tries nested in tries or in mini-batch tries.
    assert failing_calls(flaky) == {("pipe_file", status_path): len(virtual_clock.sleeps) + 1}
    assert flaky.calls[("pipe_file", status_path)] > 1
    assert status_path not in flaky.store


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_storage_error_reading_a_piece_is_named_a_storage_error_not_an_input_error(flaky, fmt):
    root = f"/run-{uuid.uuid4().hex}"
    make_input(fmt, root)
    name = "a.csv" if fmt == "csv" else "a.parquet"
    piece = TabularPiece(path=f"flaky://{root}/in/{name}", format=fmt, unit="file")
    mb = MiniBatch(index=0, kind="tabular", piece=piece)
    flaky.always = staticmethod(lambda op, path: op.startswith("open"))

    # Reading: the StorageError itself, not a TableReadError ("cannot read the input").
    with pytest.raises(StorageError) as info:
        read_table_rows(piece)
    assert not isinstance(info.value, InputError)
    call = "_read_text" if fmt == "csv" else "_read_parquet"
    assert f"{call} 'flaky://{root}/in/{name}' kept failing" in str(info.value)

    # The worker's reply says so too, with the engine's traceback.
    parent, child = multiprocessing.Pipe()
    with parent, child:
        reply = worker.run_one(types.ModuleType("entry"), {"mini_batch": mb.to_dict()}, child)
    assert (reply["ok"], reply["category"]) == (False, "storage")
    assert "a storage error" in reply["message"] and "StorageError" in reply["traceback"]

    # Counting its items: unknown, not a made-up number.
    assert count_piece_items(mb) is None
