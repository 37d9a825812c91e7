"""The storage libraries' own retries, as a user gets them by default, absorb a single fault.

One request of each read and write is answered with a fault by the proxy in front of the real
server; the package's own retries are given no time (``PARALLELRUN_STORAGE_RETRY_SECONDS=0``), so
the call succeeds only if botocore and s3fs, or azure-storage-blob, retried it. Azure's answer to a
throttled request is to wait about 18 s before its first retry: that case is left to
``tests/airflow/test_object_store_faults.py``, which shortens the wait.
"""

from __future__ import annotations

import json

import pytest

from airflow_parallelrun.core.storage.location import Location
from tests.object_stores import make_store

CASES = [("s3", "throttle"), ("s3", "drop"), ("s3", "drop-after"), ("azure", "drop"), ("azure", "drop-after")]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "fault"), CASES)
def test_the_libraries_own_retries_absorb_a_single_fault(
    kind: str, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    object_store = make_store(kind)
    for key, value in object_store.env().items():
        monkeypatch.setenv(key, value)
    object_store.put("in/a.txt", b"hello")
    faulted: set[str] = set()

    def once_per_method(number: int, method: str, path: str) -> str | None:
        if "/in/" in path and method in ("GET", "PUT") and method not in faulted:
            faulted.add(method)
            return fault
        return None

    proxied = object_store.behind_proxy(fault=once_per_method)
    monkeypatch.setenv(f"AIRFLOW_CONN_{proxied.conn_id.upper()}", json.dumps(proxied.connection()))
    monkeypatch.setenv("PARALLELRUN_STORAGE_RETRY_SECONDS", "0")
    location = Location(proxied.url("in"), ParallelRunStorageHook(proxied.conn_id).filesystem(proxied.url()))
    try:
        assert location.read_bytes(location.join("a.txt")) == b"hello"
        location.write_bytes(location.join("b.txt"), b"world")
    finally:
        proxied.proxies[0].close()
    assert faulted == {"GET", "PUT"}
    assert object_store.fs().cat_file(object_store.path("in/b.txt")) == b"world"
