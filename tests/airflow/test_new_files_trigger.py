"""NewFilesTrigger: serializes, fires on new settled files only, once, and never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.triggers.new_files import TRIGGERING_FILES, NewFilesTrigger
from tests.airflow.airflow_versions import stored_trigger_kwargs

pytestmark = pytest.mark.airflow


# Waits for an event only bound a hang; "fires nothing" is judged over a number of polls, counted,
# never over a stretch of the wall clock that a busy machine fills with fewer polls.
HANG = 120.0


def _trigger(folder: Path, **kwargs: Any) -> NewFilesTrigger:
    kwargs = {"pattern": "*.png", "settle_seconds": 0.2, "poke_interval": 0.05, **kwargs}
    return NewFilesTrigger(path=str(folder), **kwargs)


async def _next_event(trigger: NewFilesTrigger, timeout: float) -> Any:
    """Return the trigger's next event, or None when it fires nothing within ``timeout``."""
    events = trigger.run()
    try:
        return await asyncio.wait_for(events.__anext__(), timeout)
    except TimeoutError:
        return None
    finally:
        await events.aclose()


class Listings:
    """Counts the folder listings every NewFiles makes (one per poll of a trigger)."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Listings:
    from airflow_parallelrun.core.storage import new_files

    # Every listing of the watched folder, by NewFiles or list_files, is one call of find_files.
    counter, real = Listings(), new_files.find_files

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return real(*args, **kwargs)
        finally:
            counter.count += 1

    monkeypatch.setattr(new_files, "find_files", counted)
    return counter


async def _events_over_polls(
    trigger: NewFilesTrigger, listings: Listings, polls: int, *, after_events: int = 0
) -> list[Any]:
    """Run the trigger until it fired ``after_events`` events, then for ``polls`` more listings.

    Return every event it fired; one run of ``trigger.run()`` throughout.
    """
    events: list[Any] = []
    gen = trigger.run()

    async def consume() -> None:
        async for event in gen:
            events.append(event)

    task = asyncio.create_task(consume())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG
    while len(events) < after_events and not task.done():
        assert loop.time() < deadline, f"{len(events)} of {after_events} events in {HANG:g}s"
        await asyncio.sleep(0.01)
    start, deadline = listings.count, loop.time() + HANG
    while listings.count - start < polls and not task.done():
        assert loop.time() < deadline, f"only {listings.count - start} of {polls} polls in {HANG:g}s"
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await gen.aclose()
    return events


async def taken_then_quiet(trigger: NewFilesTrigger, first_within: float, quiet: float) -> tuple[Any, Any]:
    """Return the trigger's first event and what it fires within ``quiet`` seconds once resumed.

    Resuming the generator after its first event is what the triggerer does once it took the event.
    """
    stream = trigger.run()
    event = await asyncio.wait_for(stream.__anext__(), first_within)
    try:
        after = await asyncio.wait_for(stream.__anext__(), quiet)
    except TimeoutError:
        after = None
    await stream.aclose()
    return event, after


def _rebuilt(trigger: NewFilesTrigger) -> NewFilesTrigger:
    """Build the trigger again from what it serialized, as the triggerer does after a restart."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**stored_trigger_kwargs(classpath, kwargs))


def test_serialize_round_trips_through_the_classpath_and_kwargs(tmp_path: Path) -> None:
    from airflow.triggers.base import BaseEventTrigger

    trigger = _trigger(tmp_path, conn_id="incoming_store", max_files=7, state_path=str(tmp_path / "st"))
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_parallelrun.triggers.new_files.NewFilesTrigger"
    again = _rebuilt(trigger)
    assert type(again) is NewFilesTrigger
    assert again.serialize() == (classpath, kwargs)
    assert BaseEventTrigger.hash(*again.serialize()) == BaseEventTrigger.hash(classpath, kwargs)
    assert kwargs["conn_id"] == "incoming_store"  # a name; the secret is fetched when it runs


def test_run_fires_on_new_settled_files_with_their_paths(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"a")
    (tmp_path / "b.png").write_bytes(b"b")
    (tmp_path / "notes.txt").write_bytes(b"not matched")
    event = asyncio.run(_next_event(_trigger(tmp_path), timeout=HANG))
    assert event is not None
    assert event.payload["status"] == "success"
    assert event.payload["files"] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


class GrowingMemory(MemoryFileSystem):
    """An in-memory folder whose one file grows between any two listings while ``growing`` is set."""

    protocol = ("growmem",)
    root_marker = "/"
    store: dict[str, Any] = {}
    pseudo_dirs = [""]
    growing = threading.Event()

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(path.removeprefix("growmem://"))

    def find(self, path, *args, **kwargs):
        if self.growing.is_set():
            self.pipe_file("/in/scan.png", self.cat_file("/in/scan.png") + b"chunk")
        return super().find(path, *args, **kwargs)


@pytest.mark.slow
def test_run_does_not_fire_on_a_file_still_being_written(listings: Listings) -> None:
    fsspec.register_implementation("growmem", GrowingMemory, clobber=True)
    GrowingMemory().pipe_file("/in/scan.png", b"")
    GrowingMemory.growing.set()
    trigger = NewFilesTrigger(
        path="growmem://in",
        pattern="*.png",
        settle_seconds=0.3,
        poke_interval=0.05,
        state_path="memory://grow",
    )
    # Every listing sees it changed: 20 polls, at least 0.95 s of pauses, over three settle periods.
    started = time.monotonic()
    assert asyncio.run(_events_over_polls(trigger, listings, polls=20)) == []
    assert time.monotonic() - started >= 3 * 0.3
    GrowingMemory.growing.clear()
    # The writer stopped: the file settles and is taken whole.
    event = asyncio.run(_next_event(trigger, timeout=HANG))
    assert event.payload["files"] == ["growmem:///in/scan.png"]


@pytest.mark.slow
def test_run_does_not_fire_twice_for_the_same_files_even_after_a_restart(
    tmp_path: Path, listings: Listings
) -> None:
    (tmp_path / "a.png").write_bytes(b"a")
    trigger = _trigger(tmp_path)

    # It fires once for a.png, then polls 20 more times (at least 0.95 s) without firing again.
    events = asyncio.run(_events_over_polls(trigger, listings, polls=20, after_events=1))
    assert [e.payload["files"] for e in events] == [[str(tmp_path / "a.png")]]
    # The triggerer restarts: a new instance from the same kwargs sees the same files as taken.
    assert asyncio.run(_events_over_polls(_rebuilt(trigger), listings, polls=20)) == []
    (tmp_path / "b.png").write_bytes(b"b")
    event = asyncio.run(_next_event(_rebuilt(trigger), timeout=HANG))
    assert event.payload["files"] == [str(tmp_path / "b.png")]


def test_in_sensor_mode_it_reports_without_claiming_and_stops(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"a")
    trigger = _trigger(tmp_path, claim=False, owner="dag/run/wait/-1")

    async def all_events() -> list[Any]:
        return [e async for e in trigger.run()]

    (event,) = asyncio.run(asyncio.wait_for(all_events(), HANG))
    url = str(tmp_path / "a.png")
    assert event.payload["files"] == [url]
    assert event.payload["stats"][url][0] == 1
    assert not (tmp_path / "_parallelrun_claims" / "files").exists()  # the sensor claims, not the trigger


def test_in_sensor_mode_one_event_reports_at_most_max_files(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"png")
    trigger = _trigger(tmp_path, claim=False, max_files=2, settle_seconds=0)

    async def all_events() -> list[Any]:
        return [e async for e in trigger.run()]

    (event,) = asyncio.run(asyncio.wait_for(all_events(), 10))
    assert event.payload["files"] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert sorted(event.payload["stats"]) == event.payload["files"]


class SlowMemory(MemoryFileSystem):
    """An in-memory filesystem whose listing holds on until the event loop has run meanwhile.

    A big remote folder lists slowly; this one lists until the loop proves it was free during
    the listing (``loop_ran`` set by a coroutine), or gives up after ``HANG`` seconds.
    """

    protocol = ("slowmem",)
    root_marker = "/"
    store: dict[str, Any] = {}
    pseudo_dirs = [""]
    listing = threading.Event()
    loop_ran = threading.Event()
    loop_ran_during_listing: bool | None = None

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(path.removeprefix("slowmem://"))

    def find(self, path, *args, **kwargs):
        self.listing.set()
        if SlowMemory.loop_ran_during_listing is None:
            SlowMemory.loop_ran_during_listing = self.loop_ran.wait(HANG)
        return super().find(path, *args, **kwargs)


def test_a_slow_listing_does_not_block_the_event_loop() -> None:
    fsspec.register_implementation("slowmem", SlowMemory, clobber=True)
    SlowMemory().pipe("/in/a.png", b"a")
    SlowMemory.listing.clear()
    SlowMemory.loop_ran.clear()
    SlowMemory.loop_ran_during_listing = None
    trigger = NewFilesTrigger(
        path="slowmem://in",
        pattern="*.png",
        settle_seconds=0,
        poke_interval=0.05,
        state_path="memory://slow-state",
    )

    async def race() -> tuple[Any, int]:
        ticks = 0

        async def ticker() -> None:
            # Counts loop turns while a listing is in progress; a blocked loop counts none.
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                if SlowMemory.listing.is_set() and not SlowMemory.loop_ran.is_set():
                    ticks += 1
                    if ticks >= 3:
                        SlowMemory.loop_ran.set()

        task = asyncio.create_task(ticker())
        event = await _next_event(trigger, timeout=3 * HANG)
        task.cancel()
        return event, ticks

    event, ticks = asyncio.run(race())
    assert event.payload["files"] == ["slowmem:///in/a.png"]
    assert SlowMemory.loop_ran_during_listing, "the event loop did not run while the listing was in progress"
    assert ticks >= 3


def test_bad_arguments_are_refused_when_the_trigger_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"poke_interval=0 must be a number of seconds > 0"):
        _trigger(tmp_path, poke_interval=0)
    with pytest.raises(ConfigError, match=r"pattern='/etc/\*' must be a glob relative to path"):
        _trigger(tmp_path, pattern="/etc/*")


def test_it_is_accepted_by_an_asset_watcher(tmp_path: Path) -> None:
    from airflow.sdk import Asset, AssetWatcher

    asset = Asset("incoming", watchers=[AssetWatcher(name="incoming_files", trigger=_trigger(tmp_path))])
    assert asset.watchers[0].trigger.path == str(tmp_path)


def test_triggering_files_renders_the_files_of_every_triggering_event_as_json() -> None:
    """The template a DAG scheduled by the watcher gives to FileDataset(files=...)."""
    import json
    from datetime import datetime

    from airflow.sdk.definitions._internal.templater import Templater
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    from airflow_parallelrun.core.inputs.datasets import files_from_rendered

    def event(asset: str, extra: dict[str, Any]) -> AssetEventDagRunReferenceResult:
        return AssetEventDagRunReferenceResult.model_validate(
            {
                "asset": {"name": asset, "uri": asset, "extra": {}},
                "extra": extra,
                "source_task_id": None,
                "source_dag_id": None,
                "source_run_id": None,
                "source_map_index": None,
                "source_aliases": [],
                "timestamp": datetime.now(UTC),
            }
        )

    events = TriggeringAssetEventsAccessor.build(
        [
            event("incoming", {"from_trigger": True, "payload": {"files": ["/in/a.png", "/in/b.png"]}}),
            event("incoming", {"from_trigger": True, "payload": {"files": ["/in/c.png"]}}),
            event("other", {"rows": 3}),  # an event of another asset, not from the trigger
        ]
    )
    env = Templater().get_template_env()
    rendered = env.from_string(TRIGGERING_FILES).render(triggering_asset_events=events)
    assert json.loads(rendered) == ["/in/a.png", "/in/b.png", "/in/c.png"]
    assert files_from_rendered(rendered) == ["/in/a.png", "/in/b.png", "/in/c.png"]
    empty = env.from_string(TRIGGERING_FILES).render(
        triggering_asset_events=TriggeringAssetEventsAccessor.build([])
    )
    assert files_from_rendered(empty) == []
    with pytest.raises(ConfigError, match="not a JSON list of paths"):
        files_from_rendered("/in/a.png")


SECRET = "tr1gger-s3cret-never-serialized"


class LockedMemory(MemoryFileSystem):
    """An in-memory store that refuses every caller without the right key and secret."""

    protocol = ("lockedwatch",)
    root_marker = "/"
    store: dict[str, Any] = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(path.removeprefix("lockedwatch://"))

    def __init__(self, key: str | None = None, secret: str | None = None, **kwargs: Any) -> None:
        if key != "watcher" or secret != SECRET:
            raise PermissionError("lockedwatch: wrong or missing credentials")
        super().__init__(**kwargs)


def test_credentials_come_from_the_connection_when_it_runs_never_from_its_kwargs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    fsspec.register_implementation("lockedwatch", LockedMemory, clobber=True)
    LockedMemory(key="watcher", secret=SECRET).pipe_file("/in/a.png", b"a")
    monkeypatch.setenv(
        "AIRFLOW_CONN_INCOMING_STORE",
        json.dumps({"conn_type": "generic", "login": "watcher", "password": SECRET}),
    )
    trigger = NewFilesTrigger(
        path="lockedwatch://in",
        pattern="*.png",
        conn_id="incoming_store",
        settle_seconds=0,
        poke_interval=0.05,
    )
    assert SECRET not in repr(trigger.serialize())
    event = asyncio.run(_next_event(_rebuilt(trigger), timeout=HANG))
    assert event.payload["files"] == ["lockedwatch:///in/a.png"]
    assert SECRET not in json.dumps(event.payload)


@pytest.mark.slow
def test_25_files_with_max_files_10_fire_3_events_of_10_10_and_5_each_file_once(tmp_path: Path) -> None:
    files = [str(tmp_path / f"{i:02d}.png") for i in range(25)]
    for name in files:
        Path(name).write_bytes(b"png")
    trigger = _trigger(tmp_path, max_files=10, settle_seconds=0)

    async def events_until_quiet() -> list[Any]:
        events, stream = [], trigger.run()
        try:
            while True:
                events.append(await asyncio.wait_for(stream.__anext__(), 2.0))
        except TimeoutError:
            return events
        finally:
            await stream.aclose()

    events = asyncio.run(events_until_quiet())
    assert [len(e.payload["files"]) for e in events] == [10, 10, 5]
    assert [f for e in events for f in e.payload["files"]] == files
    assert _trigger(tmp_path).max_files == 1000  # the default cap


def test_a_trigger_cancelled_between_claiming_and_firing_leaves_its_files_to_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment: the files are claimed in the thread, the task is cancelled before it yields."""
    from airflow_parallelrun.core.storage.claims import ClaimLedger, default_state_path

    files = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    for name in files:
        Path(name).write_bytes(b"png")
    trigger = _trigger(tmp_path, settle_seconds=0)
    claimed, go_on = threading.Event(), threading.Event()
    claim_all = ClaimLedger.claim_all

    def claim_then_stall(self: ClaimLedger, *args: Any, **kwargs: Any) -> list[str]:
        won = claim_all(self, *args, **kwargs)
        claimed.set()  # the claims are on disk; hold the thread until the task is cancelled
        go_on.wait(30)
        return won

    monkeypatch.setattr(ClaimLedger, "claim_all", claim_then_stall)

    async def cancelled_after_claiming() -> list[Any]:
        fired: list[Any] = []

        async def consume() -> None:
            async for event in trigger.run():
                fired.append(event)

        task = asyncio.create_task(consume())
        assert await asyncio.to_thread(claimed.wait, 30)
        task.cancel()  # as the triggerer does on a restart, a failover, or a replaced watcher
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError)
        go_on.set()
        return fired

    assert asyncio.run(cancelled_after_claiming()) == []
    monkeypatch.undo()
    ledger = ClaimLedger(default_state_path(str(tmp_path)))
    assert all(ledger.record(f) is not None for f in files)  # claimed, never fired
    # The triggerer starts the watch again from its serialized kwargs: the claimed files fire first.
    event = asyncio.run(_next_event(_rebuilt(trigger), timeout=10))
    assert event is not None and event.payload["files"] == files
    assert {ledger.record(f)["batch"] for f in files} == {event.payload["batch"]}


@pytest.mark.slow
def test_an_event_the_triggerer_never_took_fires_again_and_a_taken_one_never(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    trigger = _trigger(tmp_path, settle_seconds=0)
    # Closed at the yield, never resumed: the triggerer was stopped before it queued the event.
    first = asyncio.run(_next_event(trigger, timeout=10))
    assert first.payload["files"] == [str(tmp_path / "a.png")]

    again, after = asyncio.run(taken_then_quiet(_rebuilt(trigger), first_within=10, quiet=1.0))
    assert again.payload["files"] == first.payload["files"]
    assert again.payload["batch"] == first.payload["batch"]
    assert after is None
    assert asyncio.run(_next_event(_rebuilt(trigger), timeout=1.0)) is None
    assert not list((tmp_path / "_parallelrun_claims" / "batches").iterdir())


class FlakyMemory(MemoryFileSystem):
    """An in-memory filesystem whose first listing fails, as a storage hiccup would."""

    protocol = ("flakymem",)
    root_marker = "/"
    store: dict[str, Any] = {}
    pseudo_dirs = [""]
    failures = 0

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(path.removeprefix("flakymem://"))

    def find(self, path, *args, **kwargs):
        if FlakyMemory.failures:
            FlakyMemory.failures -= 1
            raise OSError("flakymem: connection reset")
        return super().find(path, *args, **kwargs)


def test_a_failed_poll_is_logged_with_its_traceback_and_the_step_then_retried(
    capfd: pytest.CaptureFixture[str],
) -> None:
    fsspec.register_implementation("flakymem", FlakyMemory, clobber=True)
    FlakyMemory().pipe_file("/in/a.png", b"a")
    FlakyMemory.failures = 5  # as many as the storage retries absorb: the first poll fails as a whole
    trigger = NewFilesTrigger(
        path="flakymem://in", pattern="*.png", settle_seconds=0, poke_interval=0.05, state_path="memory://fl"
    )
    event = asyncio.run(_next_event(trigger, timeout=30))
    assert event.payload["files"] == ["flakymem:///in/a.png"]
    logged = "".join(capfd.readouterr())
    assert "listing the folder and claiming settled files failed for path='flakymem://in'" in logged
    assert "Traceback" in logged and "OSError: flakymem: connection reset" in logged


def test_a_watch_that_cannot_start_reports_what_failed_and_logs_the_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from fsspec.spec import AbstractFileSystem

    class NoExclusive(AbstractFileSystem):
        protocol = "noexclusive-h4"

    fsspec.register_implementation("noexclusive-h4", NoExclusive, clobber=True)
    trigger = _trigger(tmp_path, claim=False, state_path="noexclusive-h4://claims")

    async def all_events() -> list[Any]:
        return [e async for e in trigger.run()]

    (event,) = asyncio.run(asyncio.wait_for(all_events(), 10))
    assert event.payload["status"] == "error"
    message = event.payload["message"]
    assert f"could not start watching path={str(tmp_path)!r}" in message and "ConfigError" in message
    logged = "".join(capfd.readouterr())
    assert "could not start watching" in logged and "Traceback" in logged
