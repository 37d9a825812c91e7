"""The claim ledger: a file is taken once, by one owner, only after it settles; release returns it."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractFileSystem

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.storage.claims import ClaimLedger, FileStat, claim_key, default_state_path
from airflow_parallelrun.core.storage.new_files import NewFiles, list_files


def _write(folder: Path, names: list[str], data: bytes = b"x") -> list[str]:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return [str(folder / n) for n in names]


def _race(folder: str, owner: str, barrier: Any, queue: Any) -> None:
    """Claim every settled file of ``folder`` as soon as every racer is ready."""
    watch = NewFiles(folder, "*.png", settle_seconds=0)
    ready = watch.settled()
    barrier.wait()
    queue.put((owner, watch.claim(ready, owner)))


def run_racers(target: Any, args: list[tuple[Any, ...]], timeout: float = 60) -> dict[str, list[str]]:
    """Run ``target(*args[i], barrier, queue)`` in spawned processes; return what each put, by owner."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(len(args)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, queue)) for a in args]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=timeout) for _ in procs)
    for p in procs:
        p.join(timeout=timeout)
        assert p.exitcode == 0
    return results


@pytest.mark.slow
def test_racing_processes_each_file_goes_to_exactly_one(tmp_path: Path) -> None:
    files = _write(tmp_path, [f"f{i:03d}.png" for i in range(60)])
    results = run_racers(_race, [(str(tmp_path), f"run-{i}") for i in range(6)])
    won = [url for urls in results.values() for url in urls]
    assert sorted(won) == files  # every file taken, none twice
    ledger = ClaimLedger(default_state_path(str(tmp_path)))
    for owner, urls in results.items():
        for url in urls:
            assert ledger.record(url)["owner"] == owner
    # No temporary file is left next to the claims.
    assert sorted(p.name for p in (tmp_path / "_parallelrun_claims" / "files").iterdir()) == sorted(
        f"{claim_key(u)}.json" for u in files
    )


def test_racing_threads_on_memory_storage_each_file_goes_to_exactly_one() -> None:
    fs = fsspec.filesystem("memory")
    for i in range(40):
        fs.pipe(f"/race/in/f{i}.txt", b"data")
    stats = list(list_files("memory://race/in", "*.txt").values())
    ledger = ClaimLedger("memory://race/state")
    start = threading.Barrier(8)
    wins: dict[str, list[str]] = {}

    def racer(owner: str) -> None:
        start.wait()
        wins[owner] = [s.url for s in stats if ledger.claim(s, owner)]

    threads = [threading.Thread(target=racer, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = sorted(url for urls in wins.values() for url in urls)
    assert won == sorted(s.url for s in stats)


class FakeClock:
    """A monotonic clock the test moves by hand; its ``sleep`` moves it and records the pause."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_file_is_taken_only_after_it_kept_size_and_mtime_for_the_settle_period(tmp_path: Path) -> None:
    (a,) = _write(tmp_path, ["a.png"])
    clock = FakeClock()
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0.5, clock=clock, sleep=clock.sleep)
    assert watch.take("run-1") == []  # first seen just now
    clock.now += 0.375
    assert watch.take("run-1") == []  # not yet unchanged for the settle period
    clock.now += 0.125
    assert watch.take("run-1") == [a]
    assert watch.take("run-2") == []
    assert clock.slept == []  # a poll without ``wait`` never sleeps


def test_a_file_still_growing_is_not_taken(tmp_path: Path) -> None:
    growing = tmp_path / "big.png"
    growing.write_bytes(b"")
    clock = FakeClock()
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0.5, clock=clock, sleep=clock.sleep)
    # Polled every 0.25 s for 2.5 s, five times the settle period: each poll sees it changed.
    for _ in range(10):
        with growing.open("ab") as f:
            f.write(b"more")
        assert watch.take("run-1") == []
        clock.now += 0.25
    # Once the writer stops, the file settles and is taken whole.
    assert watch.take("run-1") == []
    clock.now += 0.5
    assert watch.take("run-1") == [str(growing)]
    assert ClaimLedger(watch.state_path).record(str(growing))["size"] == growing.stat().st_size


def test_a_poll_that_remembers_nothing_waits_for_the_settle_period(tmp_path: Path) -> None:
    (a,) = _write(tmp_path, ["a.png"])
    clock = FakeClock()
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0.5, clock=clock, sleep=clock.sleep)
    assert watch.take("run-1", wait=True) == [a]
    assert clock.slept == [0.5]  # slept once, exactly until the file could settle


def test_release_returns_files_to_the_pool(tmp_path: Path) -> None:
    files = _write(tmp_path, ["a.png", "b.png", "c.png"])
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0)
    assert watch.take("failed-run") == files
    assert watch.take("next-run") == []
    assert watch.ledger.release([*files[:2], str(tmp_path / "never-taken.png")]) == files[:2]
    assert watch.take("next-run") == files[:2]
    assert watch.ledger.record(files[0])["owner"] == "next-run"


def test_max_files_caps_one_take_and_leaves_the_rest(tmp_path: Path) -> None:
    files = _write(tmp_path, [f"{i}.png" for i in range(5)])
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0, max_files=2)
    assert watch.take("r1") == files[:2]
    assert watch.take("r2") == files[2:4]
    assert watch.take("r3") == files[4:]


def test_an_owner_gets_back_only_the_files_it_claimed(tmp_path: Path) -> None:
    files = _write(tmp_path, ["a.png", "b.png"])
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0)
    assert watch.ledger.claim(FileStat(files[1], 1, "0"), "other") is True
    assert watch.ledger.claimed_by("dag/run/sensor/-1") is None
    assert watch.take("dag/run/sensor/-1", remember=True) == [files[0]]
    # A retried or cleared task with the same identity finds what it took, not its rival's file.
    assert watch.ledger.claimed_by("dag/run/sensor/-1") == [files[0]]


def test_the_claims_folder_and_unmatched_files_are_not_candidates(tmp_path: Path) -> None:
    files = _write(tmp_path, ["a.png", "sub/b.png", "notes.txt"])
    watch = NewFiles(str(tmp_path), "**/*", settle_seconds=0)
    assert watch.take("r1") == sorted([*files])
    assert watch.take("r2") == []  # the claims just written under the folder are not new files
    assert sorted(list_files(str(tmp_path), "**/*.png", exclude=watch.state_path)) == sorted(files[:2])
    assert list_files(str(tmp_path / "missing"), "*") == {}


class CountingMemory(MemoryFileSystem):
    """An in-memory filesystem of its own that counts the calls the code makes on it.

    A call fsspec makes inside another counts as part of that one: fsspec before 2026.9 answers
    ``find`` with an ``ls`` of the folder too, still one listing of the store.
    """

    protocol = ("countingmem",)
    root_marker = "/"
    store: dict[str, Any] = {}
    pseudo_dirs = [""]
    calls: list[str] = []
    depth = 0

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(path.removeprefix("countingmem://"))

    def _counted(self, call: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        if CountingMemory.depth == 0:
            self.calls.append(call)
        CountingMemory.depth += 1
        try:
            return method(*args, **kwargs)
        finally:
            CountingMemory.depth -= 1

    def find(self, path, *args, **kwargs):
        return self._counted(f"find {path}", super().find, path, *args, **kwargs)

    def info(self, path, **kwargs):
        return self._counted(f"info {path}", super().info, path, **kwargs)

    def ls(self, path, detail=True, **kwargs):
        return self._counted(f"ls {path}", super().ls, path, detail=detail, **kwargs)


def test_a_poll_lists_the_folder_once_not_once_per_file() -> None:
    fsspec.register_implementation("countingmem", CountingMemory, clobber=True)
    fs = CountingMemory()
    for i in range(300):
        fs.pipe(f"/watched/in/{i:04d}.png", b"png")
    watch = NewFiles(
        "countingmem://watched/in", "*.png", state_path="countingmem://watched/state", settle_seconds=0
    )
    CountingMemory.calls.clear()
    assert len(watch.settled()) == 300
    on_input = [c for c in CountingMemory.calls if "/watched/in" in c]
    assert on_input == ["find /watched/in"]


class NoExclusiveCreate(AbstractFileSystem):
    protocol = "noexclusive"


def test_a_filesystem_without_exclusive_create_is_refused_with_what_to_do() -> None:
    fsspec.register_implementation("noexclusive", NoExclusiveCreate, clobber=True)
    with pytest.raises(ConfigError) as err:
        NewFiles("memory://in", "*.png", state_path="noexclusive://bucket/claims")
    message = str(err.value)
    assert "state_path='noexclusive://bucket/claims'" in message
    assert "NoExclusiveCreate" in message and "shared POSIX folder" in message
    assert "S3" in message and "Azure Blob" in message and "put state_path on one of those" in message


class LooksLikeS3(AbstractFileSystem):
    """A filesystem that calls itself s3 but is not s3fs's: its puts send no condition."""

    protocol = ("s3", "s3a")


def test_the_refusal_reads_as_the_object_stores_page_shows_it() -> None:
    """The page's example names gcsfs's class; a class of that name and module stands for it here."""
    from airflow_parallelrun.core.storage.exclusive_create import check_exclusive_create

    page = (Path(__file__).parents[2] / "docs" / "object-stores.md").read_text()
    shown = page.split("The error reads:\n\n```text\n", 1)[1].split("```", 1)[0]
    gcs = type(
        "GCSFileSystem", (AbstractFileSystem,), {"__module__": "gcsfs.core", "protocol": ("gs", "gcs")}
    )
    with pytest.raises(ConfigError) as err:
        check_exclusive_create(gcs(), "gs://bucket/incoming/_parallelrun_claims")
    assert " ".join(shown.split()) == str(err.value)


def test_the_store_is_told_by_the_filesystem_s_class_not_by_the_url() -> None:
    with pytest.raises(ConfigError, match=r"LooksLikeS3 \(protocol \('s3', 's3a'\)\)"):
        ClaimLedger("s3://bucket/claims", LooksLikeS3())


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"pattern": "../*.png"}, "pattern='../*.png'"),
        ({"settle_seconds": -1}, "settle_seconds=-1"),
        ({"max_files": 0}, "max_files=0"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_fix(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=r"e\.g\.|whole number") as err:
        NewFiles("memory://in", **kwargs)
    assert named in str(err.value)


def test_25_files_with_max_files_10_go_in_takes_of_10_10_and_5_each_file_once(tmp_path: Path) -> None:
    files = _write(tmp_path, [f"{i:02d}.png" for i in range(25)])
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0, max_files=10)
    takes = [watch.take(f"r{i}") for i in range(4)]
    assert [len(t) for t in takes] == [10, 10, 5, 0]
    assert [u for t in takes for u in t] == files


def test_one_take_carries_at_most_1000_files_unless_told_otherwise() -> None:
    fs = fsspec.filesystem("memory")
    for i in range(1003):
        fs.pipe(f"/cap/in/{i:05d}.txt", b"x")
    watch = NewFiles("memory://cap/in", "*.txt", settle_seconds=0)
    assert watch.max_files == 1000
    assert len(watch.take("r1")) == 1000
    assert len(watch.take("r2")) == 3


def test_a_poll_with_the_default_ledger_makes_one_listing_call() -> None:
    """The default ledger is inside the folder: the folder's listing has the claims, no second call."""
    fsspec.register_implementation("countingmem", CountingMemory, clobber=True)
    fs = CountingMemory()
    for i in range(50):
        fs.pipe(f"/onecall/in/{i:04d}.png", b"png")
    watch = NewFiles("countingmem://onecall/in", "*.png", settle_seconds=0, max_files=20)
    assert len(watch.take("r1")) == 20  # 20 claims now live under the folder
    CountingMemory.calls.clear()
    ready = watch.settled()
    assert len(ready) == 30  # the 20 claimed files are seen as taken
    listings = [c for c in CountingMemory.calls if c.startswith(("find", "ls"))]
    assert listings == ["find /onecall/in"]


def _age_claims(ledger: ClaimLedger, urls: list[str], days: float) -> None:
    """Make the claims of ``urls`` as old as ``days``: their record's timestamp and their object's."""
    import json
    import os
    from datetime import datetime, timedelta

    then = datetime.now(UTC) - timedelta(days=days)
    for url in urls:
        path = ledger._file_claim(url)
        record = json.loads(Path(path).read_text())
        record["claimed_at"] = then.isoformat()
        Path(path).write_text(json.dumps(record))
        os.utime(path, (then.timestamp(), then.timestamp()))


def test_claims_older_than_the_retention_are_pruned_unless_their_file_is_still_there(tmp_path: Path) -> None:
    import os
    from datetime import timedelta

    gone, stays, recent = _write(tmp_path, ["gone.png", "stays.png", "recent.png"])
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0)
    assert watch.take("r1") == [gone, recent, stays]
    ledger = watch.ledger
    # Another watch sharing this ledger: its old claim is for it to prune, not for this one.
    elsewhere = str(tmp_path.parent / "elsewhere" / "x.png")
    assert ledger.claim(FileStat(elsewhere, 1, "0"), "other-watch")
    _age_claims(ledger, [gone, stays, elsewhere], days=8)
    Path(gone).unlink()
    Path(recent).unlink()
    # A new poll (a new trigger after a restart, say) prunes with the default 7 days' retention.
    again = NewFiles(str(tmp_path), "*.png", settle_seconds=0)
    assert again.retention == timedelta(days=7).total_seconds()
    assert again.take("r2") == []  # the file still there is not new again
    assert ledger.record(gone) is None  # 8 days old, its file gone: pruned
    assert ledger.record(stays)["owner"] == "r1"  # 8 days old, its file still there: kept
    assert ledger.record(recent)["owner"] == "r1"  # its file gone, but claimed just now: kept
    assert ledger.record(elsewhere)["owner"] == "other-watch"
    # A sensor's note of what it claimed (for its retries) goes with the same retention.
    (new,) = _write(tmp_path, ["new.png"])
    assert watch.take("dag/run/wait/-1", remember=True) == [new]
    assert again.ledger.claimed_by("dag/run/wait/-1") == [new]
    runs = list((tmp_path / "_parallelrun_claims" / "runs").iterdir())
    os.utime(runs[0], (time.time() - 9 * 86400, time.time() - 9 * 86400))
    NewFiles(str(tmp_path), "*.png", settle_seconds=0).take("r2")
    assert again.ledger.claimed_by("dag/run/wait/-1") is None
    # None keeps every claim.
    _age_claims(ledger, [recent], days=30)
    NewFiles(str(tmp_path), "*.png", settle_seconds=0, claim_retention=None).take("r3")
    assert ledger.record(recent) is not None
    NewFiles(str(tmp_path), "*.png", settle_seconds=0, claim_retention=timedelta(days=40)).take("r3")
    assert ledger.record(recent) is not None
    NewFiles(str(tmp_path), "*.png", settle_seconds=0, claim_retention=timedelta(days=20)).take("r3")
    assert ledger.record(recent) is None


def test_a_batch_is_recorded_before_its_files_are_claimed_and_found_until_closed(tmp_path: Path) -> None:
    files = _write(tmp_path, ["a.png", "b.png", "c.png"])
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0)
    seen_before_claiming: list[list[tuple[str, list[str]]]] = []
    claim_all = watch.ledger.claim_all

    def spy(*args: Any, **kwargs: Any) -> list[str]:
        seen_before_claiming.append(watch.ledger.unfired_batches(watch.key))
        return claim_all(*args, **kwargs)

    watch.ledger.claim_all = spy  # type: ignore[method-assign]
    assert watch.ledger.claim(FileStat(files[1], 1, "0"), "rival")
    batch, taken = watch.take_batch("trigger-1")
    assert taken == [files[0], files[2]]
    # Before any claim the batch was on record (with no file of its own claimed yet).
    assert seen_before_claiming == [[(batch, [])]]
    assert watch.ledger.record(files[0])["batch"] == batch
    other = NewFiles(str(tmp_path), "*.png", settle_seconds=0)
    assert other.ledger.unfired_batches(other.key) == [(batch, taken)]
    assert other.ledger.unfired_batches({"path": str(tmp_path), "pattern": "*.txt"}) == []
    watch.ledger.close_batch(batch)
    assert other.ledger.unfired_batches(other.key) == []
    assert watch.take_batch("trigger-1") is None
    assert not list((tmp_path / "_parallelrun_claims" / "batches").iterdir())


def test_a_batch_whose_files_a_rival_took_is_closed_at_once(tmp_path: Path) -> None:
    (a,) = _write(tmp_path, ["a.png"])
    watch = NewFiles(str(tmp_path), "*.png", settle_seconds=0)
    ready = watch.settled()
    assert NewFiles(str(tmp_path), "*.png", settle_seconds=0).take("rival") == [a]
    watch.settled = lambda **_: ready  # type: ignore[method-assign]
    assert watch.take_batch("trigger-1") is None
    assert watch.ledger.unfired_batches(watch.key) == []


def test_a_symlink_is_never_a_new_file(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "in"
    (inside,) = _write(folder, ["a.png"])
    (tmp_path / "secret.png").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.png", folder / "out.png")
    assert list(list_files(str(folder), "*.png")) == [inside]
    assert NewFiles(str(folder), "*.png", settle_seconds=0).take("r1") == [inside]


@pytest.mark.parametrize("retention", [0, -1, "7d", True])
def test_a_bad_claim_retention_names_the_value_and_the_fix(retention: Any) -> None:
    with pytest.raises(ConfigError, match=r"claim_retention=.* must be a timedelta or a number of seconds"):
        NewFiles("memory://in", claim_retention=retention)
