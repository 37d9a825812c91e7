"""Transient storage errors are retried with backoff, and count as failures only when they persist.

The storage is a real fsspec filesystem, registered under ``flaky://``: fsspec's memory
filesystem whose operations raise ``ConnectionError`` or ``TimeoutError`` the first times they
are called on each path, as an object store does when a connection drops. Only the outermost
operation of a call fails (``get_file`` fails, not the ``open`` it makes inside), and ``exists``
lets an error through as the cloud filesystems do, instead of answering False.

The retry policy is the engine's own (``core/storage.py``), with its wait cut to a millisecond
through tenacity's API so the tests do not sleep through the backoff.
"""

from __future__ import annotations

import threading
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
import tenacity
from fsspec.implementations.memory import MemoryFileSystem

from airflow_parallelrun.core import engine, storage
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.datasets import Dataset, FileDataset, TabularDataset
from airflow_parallelrun.core.engine import RunSpec
from airflow_parallelrun.core.errors import StorageError

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
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the engine's retry policy (what is retried, how often) but wait a millisecond."""
    fast = tenacity.wait_fixed(0.001)
    policies = [
        method.retry
        for method in vars(storage.Location).values()
        if isinstance(getattr(method, "retry", None), tenacity.BaseRetrying)
    ]
    assert len(policies) >= 6, "Location's storage calls are no longer retried with tenacity"
    for policy in policies:
        monkeypatch.setattr(policy, "wait", fast)
    template = policies[0]
    monkeypatch.setattr(storage, "retrying", lambda fn: template.copy(wait=fast).wraps(fn))


MAX_TRIES = 5  # core/storage.py: stop_after_attempt(5)


def failing_calls(fs: type[FlakyFileSystem]) -> dict[tuple[str, str], int]:
    """Return how often each (operation, path) that failed was called.

    How long a persistent error takes is a property of these counts (the waits are cut to a
    millisecond above), not of the wall clock, which a busy machine stretches.
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

    descriptors = engine.partition(dataset, spec)
    statuses = engine.run_mini_batches(range(len(descriptors)), spec)
    summary = engine.aggregate(spec)

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
    engine.run_mini_batches(range(len(engine.partition(dataset, spec))), spec)
    flaky.failures = 1
    flaky.always = staticmethod(lambda op, path: None if op != "open:r" else False)
    assert engine.aggregate(spec)["status"] == "succeeded"


@pytest.mark.parametrize("op", ["info", "glob"])
def test_a_listing_error_that_persists_fails_the_partition_quickly_and_clearly(tmp_path, flaky, op):
    root = f"/run-{uuid.uuid4().hex}"
    dataset, _, size = make_input("files", root)
    spec = run_spec(tmp_path, root, FILE_SCRIPT, size)
    flaky.always = staticmethod(lambda o, path: o == op and path.startswith(f"{root}/in"))
    with pytest.raises(StorageError) as info:
        engine.partition(dataset, spec)
    message = str(info.value)
    assert f"flaky://{root}/in" in message and "kept failing after retries" in message
    assert isinstance(info.value.__cause__, (ConnectionError, TimeoutError))
    assert max(n for (o, _), n in flaky.calls.items() if o == op) > 1, "the call was not retried"
    # Quickly: the first failing call costs the policy's tries once (no tries nested in tries), then stops.
    assert list(failing_calls(flaky).values()) == [MAX_TRIES], failing_calls(flaky)


def test_an_input_read_error_that_persists_fails_only_its_mini_batch(tmp_path, flaky):
    root = f"/run-{uuid.uuid4().hex}"
    dataset, expected, size = make_input("files", root)
    spec = run_spec(tmp_path, root, FILE_SCRIPT, size)
    descriptors = engine.partition(dataset, spec)
    broken = f"{root}/in/f4.txt"
    flaky.always = staticmethod(lambda op, path: op == "get_file" and path == broken)

    statuses = engine.run_mini_batches(range(len(descriptors)), spec)
    summary = engine.aggregate(spec)
    # Quickly: the broken file costs the policy's tries once, not tries nested in tries.
    assert failing_calls(flaky) == {("get_file", broken): MAX_TRIES}

    first, failed, last = statuses
    assert first.succeeded and last.succeeded
    assert failed.status == "failed" and failed.error_category == "input"
    assert failed.tries == 1, "a storage error is retried by the storage layer, not as mini-batch tries"
    assert broken in failed.error_message and "the connection dropped" in failed.error_message
    assert flaky.calls[("get_file", broken)] > 1
    assert (summary["failed_mini_batches"], summary["failed_items"]) == (1, 3)
    assert stored(root, "out", "parallel_run_step.txt").splitlines() == expected[:3] + expected[6:]


def test_an_output_write_error_that_persists_fails_the_run_step_naming_the_path(tmp_path, flaky):
    root = f"/run-{uuid.uuid4().hex}"
    dataset, _, size = make_input("files", root)
    spec = run_spec(tmp_path, root, FILE_SCRIPT, size)
    engine.partition(dataset, spec)
    status_path = f"{root}/out/_parallelrun/status/mb-000000.json"
    flaky.always = staticmethod(lambda op, path: op == "pipe_file" and path == status_path)
    with pytest.raises(StorageError, match=r"kept failing after 5 tries.*the connection dropped") as info:
        engine.run_mini_batch(0, spec)
    assert status_path in str(info.value)
    # Quickly: the policy's tries once, not tries nested in tries or in mini-batch tries.
    assert failing_calls(flaky) == {("pipe_file", status_path): MAX_TRIES}
    assert flaky.calls[("pipe_file", status_path)] > 1
    assert status_path not in flaky.store
