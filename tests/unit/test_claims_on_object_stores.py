"""The claim ledger on S3 (moto's server) and Azure Blob (Azurite): each file is taken once, by one owner.

A claim is created with a conditional put (``If-None-Match: *``), see
``airflow_parallelrun/core/storage/exclusive_create.py``. moto checks the condition without a
lock and Azurite is an emulator: on them these tests show the semantics (who gets the file, what
a loser sees, what a retry does), not the store's atomicity, which AWS and Azure document.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_parallelrun.core.errors import StorageError
from airflow_parallelrun.core.storage.claims import ClaimLedger, FileStat, claim_key
from airflow_parallelrun.core.storage.new_files import NewFiles
from tests.object_stores import ObjectStore
from tests.unit.test_claims import run_racers

RACERS = 6
FILES = 60


def _fs(conn_id: str, url: str) -> Any:
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    return ParallelRunStorageHook(conn_id).filesystem(url)


def _race(conn_id: str, folder: str, owner: str, start: int, barrier: Any, queue: Any) -> None:
    """Claim every file of ``folder`` once every racer is ready, with a filesystem built here.

    Each racer starts at another file and goes round, so racers meet on the same files midway.
    """
    watch = NewFiles(folder, "*.png", settle_seconds=0, storage_options=_fs(conn_id, folder))
    ready = watch.settled()
    barrier.wait()
    queue.put((owner, watch.claim(ready[start:] + ready[:start], owner)))


@pytest.mark.slow
def test_six_processes_racing_for_60_files_each_file_is_taken_exactly_once(
    object_store: ObjectStore,
) -> None:
    """Six spawned processes, each with its own filesystem from the Connection (as six tasks would).

    On moto and Azurite this shows that every create but one is refused and no claim is lost;
    that the real stores make the create atomic is their documented guarantee, not shown here.
    """
    fs = object_store.fs()
    fs.pipe({object_store.path(f"in/f{i:03d}.png"): b"png" for i in range(FILES)})
    folder = object_store.url("in")
    racers = [(object_store.conn_id, folder, f"run-{i}", i * FILES // RACERS) for i in range(RACERS)]
    results = run_racers(_race, racers, timeout=240)
    won = sorted(url for urls in results.values() for url in urls)
    assert won == [object_store.url(f"in/f{i:03d}.png") for i in range(FILES)]  # each once, none lost
    assert sum(1 for urls in results.values() if urls) > 1  # a race, not one racer alone
    ledger = ClaimLedger(f"{folder}/_parallelrun_claims", fs)
    assert ledger.taken() == {claim_key(url) for url in won}
    for owner, urls in results.items():
        for url in urls:
            record = ledger.record(url)
            assert record is not None and (record["owner"], record["file"]) == (owner, url)


def test_a_second_claim_is_refused_and_leaves_the_first_untouched_release_frees_it(
    object_store: ObjectStore,
) -> None:
    fs = object_store.fs()
    ledger = ClaimLedger(object_store.url("state"), fs)
    stat = FileStat(object_store.url("in/a.png"), 3, "2026-11-29T09:00:00")
    assert ledger.claim(stat, "first")
    claim_object = object_store.path("state/files", f"{claim_key(stat.url)}.json")
    body = fs.cat_file(claim_object)
    assert not ledger.claim(stat, "second")
    assert fs.cat_file(claim_object) == body
    assert json.loads(body)["owner"] == "first"
    assert ledger.claim_all([stat, FileStat(object_store.url("in/b.png"), 1, "x")], "second") == [
        object_store.url("in/b.png")
    ]
    assert ledger.release([stat.url]) == [stat.url]
    assert ledger.record(stat.url) is None
    assert ledger.claim(stat, "second")
    assert ledger.record(stat.url)["owner"] == "second"  # type: ignore[index]


def test_batch_records_are_written_found_and_closed(object_store: ObjectStore) -> None:
    ledger = ClaimLedger(object_store.url("state"), object_store.fs())
    watch = {"path": object_store.url("in"), "pattern": "*.png"}
    files = [object_store.url("in/a.png"), object_store.url("in/b.png")]
    ledger.write_batch("b1", watch, "trigger", files)
    assert ledger.unfired_batches(watch) == [("b1", [])]  # on record before any claim
    assert ledger.claim(FileStat(files[0], 1, "x"), "trigger", batch="b1")
    assert ledger.claim(FileStat(files[1], 1, "x"), "rival")
    assert ledger.unfired_batches(watch) == [("b1", files[:1])]
    assert ledger.unfired_batches({**watch, "pattern": "*.txt"}) == []
    ledger.close_batch("b1")
    assert ledger.unfired_batches(watch) == []


def _claim_puts(action: str, times: int) -> Any:
    """Return a proxy fault: ``action`` for the first ``times`` writes of claim objects."""
    seen = []

    def fault(number: int, method: str, path: str) -> str | None:
        if method == "PUT" and "_parallelrun_claims/files/" in path and len(seen) < times:
            seen.append(number)
            return action
        return None

    return fault


@pytest.mark.slow
def test_a_409_conflict_is_retried_and_the_claim_taken_once(
    object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy answers the first two creates 409 ConditionalRequestConflict: S3's "retry" answer.

    For Azure the same answer is a 409 whose code is not BlobAlreadyExists: a conflict, not a taken
    name. Either is retried, and the third create takes the file.
    """
    proxied = object_store.behind_proxy(fault=_claim_puts("conflict", 2))
    monkeypatch.setenv(*next(iter(proxied.env().items())))
    ledger = ClaimLedger(proxied.url("_parallelrun_claims"), proxied.fs())
    stat = FileStat(proxied.url("in/a.png"), 1, "x")
    assert ledger.claim(stat, "mine")
    assert [f[3] for f in proxied.proxies[0].faults] == ["conflict", "conflict"]
    assert ledger.record(stat.url)["owner"] == "mine"  # type: ignore[index]
    assert not ClaimLedger(object_store.url("_parallelrun_claims"), object_store.fs()).claim(stat, "rival")


@pytest.mark.slow
def test_a_conflict_that_never_ends_fails_with_the_store_s_answer(
    object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxied = object_store.behind_proxy(fault=_claim_puts("conflict", 10_000))
    monkeypatch.setenv(*next(iter(proxied.env().items())))
    monkeypatch.setenv("PARALLELRUN_STORAGE_RETRY_SECONDS", "1")
    ledger = ClaimLedger(proxied.url("_parallelrun_claims"), proxied.fs())
    with pytest.raises(StorageError, match="ConditionalRequestConflict") as err:
        ledger.claim(FileStat(proxied.url("in/a.png"), 1, "x"), "mine")
    assert "kept failing" in str(err.value)
    assert ledger.record(proxied.url("in/a.png")) is None


def test_a_create_whose_answer_is_lost_is_still_this_claim(
    object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create reaches the store, the answer is dropped: the retry meets the taken name and the
    claim's token tells that the taker was this call."""
    proxied = object_store.behind_proxy(fault=_claim_puts("drop-after", 1))
    monkeypatch.setenv(*next(iter(proxied.env().items())))
    ledger = ClaimLedger(proxied.url("_parallelrun_claims"), proxied.fs())
    stat = FileStat(proxied.url("in/a.png"), 1, "x")
    assert ledger.claim(stat, "mine")
    assert [f[3] for f in proxied.proxies[0].faults] == ["drop-after"]
    assert not ledger.claim(stat, "mine-again")


def test_an_s3_server_that_ignores_conditional_writes_is_refused_before_the_first_claim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proxy forwards every request without its If-None-Match header, as such a server ignores it."""
    from airflow_parallelrun.core.errors import ConfigError
    from tests.object_stores import make_store

    store = make_store("s3")
    proxied = store.behind_proxy(fault=lambda number, method, path: "no-conditions")
    for key, value in [*store.env().items(), *proxied.env().items()]:
        monkeypatch.setenv(key, value)
    try:
        ledger = ClaimLedger(proxied.url("_parallelrun_claims"), proxied.fs())
        with pytest.raises(ConfigError, match=r"does not implement conditional writes") as err:
            ledger.claim(FileStat(proxied.url("in/a.png"), 1, "x"), "mine")
        assert f"127.0.0.1:{proxied.port}" in str(err.value) and "put state_path on" in str(err.value)
        assert ledger.record(proxied.url("in/a.png")) is None
        assert store.fs().find(store.path("_parallelrun_claims")) == []  # the probe is removed
    finally:
        proxied.proxies[0].close()
