"""On S3 and Azure Blob, ``Location.writer`` uploads while the block writes, and publishes only at the end.

``core/storage/streamed_upload.py``, on moto's S3 server and Azurite behind ``FaultyProxy``, which
records every request: the first chunk is sent (an S3 part, an Azure block) while the writer is
still writing, and meanwhile the name holds the old object; at the end the name holds the new
one, whole. A writer that fails publishes nothing, and leaves no S3 upload open. A streamed upload
that the store refuses falls back to one whole upload. The merged output of the aggregate is
written through this writer (``steps/aggregate.py``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import pytest

from airflow_parallelrun.core.storage.location import Location
from airflow_parallelrun.core.storage.streamed_upload import CHUNK
from tests.object_stores import ObjectStore
from tests.servers.proxy import Fault, FaultyProxy

pytestmark = pytest.mark.slow

OLD = b"the old result"


def sends_a_chunk(method: str, path: str) -> bool:
    """Tell whether a request sends one chunk of an upload: an S3 part or an Azure block."""
    return method == "PUT" and ("partNumber=" in path or "blockid=" in path)


def location(store: ObjectStore, fault: Fault | None = None) -> tuple[Location, FaultyProxy]:
    """Return the test's ``out`` folder through a proxy (with ``fault``: botocore's own retries off)."""
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    slow = store.behind_proxy(delay=0.01, fault=fault)
    connection = slow.connection()
    if fault is not None:
        connection["extra"]["config_kwargs"] = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
    os.environ[f"AIRFLOW_CONN_{slow.conn_id.upper()}"] = json.dumps(connection)
    url = slow.url("out")
    return Location(url, ParallelRunStorageHook(slow.conn_id).filesystem(url)), slow.proxies[0]


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def chunk(n: int) -> bytes:
    return bytes([n]) * CHUNK


def test_chunks_go_up_while_the_writer_writes_and_the_name_changes_only_at_the_end(
    object_store: ObjectStore,
) -> None:
    object_store.put("out/result.bin", OLD)
    out, proxy = location(object_store)
    target = out.join("result.bin")
    with out.writer(target) as f:
        f.write(chunk(1))
        f.flush()
        # The first chunk is sent before the writer has finished (before: only after it).
        assert wait_for(lambda: any(sends_a_chunk(m, p) for _, _, m, p in proxy.spans)), proxy.spans
        # Never seen half-written: the name still holds the old object.
        assert object_store.fs().cat_file(object_store.path("out/result.bin")) == OLD
        f.write(chunk(2) + b"the end")
    proxy.close()
    assert object_store.fs().cat_file(object_store.path("out/result.bin")) == chunk(1) + chunk(2) + b"the end"


def test_a_writer_that_fails_midway_publishes_nothing(object_store: ObjectStore) -> None:
    object_store.put("out/result.bin", OLD)
    out, proxy = location(object_store)
    with pytest.raises(RuntimeError, match="the merge failed"), out.writer(out.join("result.bin")) as f:
        f.write(chunk(1))
        f.flush()
        assert wait_for(lambda: any(sends_a_chunk(m, p) for _, _, m, p in proxy.spans))
        raise RuntimeError("the merge failed")
    proxy.close()
    fs = object_store.fs()
    assert fs.cat_file(object_store.path("out/result.bin")) == OLD
    if object_store.kind == "s3":  # the parts sent are dropped with their upload
        # This test's own uploads: the bucket is shared, and a test that kills a writer midway
        # leaves its upload open (as a killed process does; a lifecycle rule ends those).
        mine = object_store.path("out/result.bin").split("/", 1)[1]
        assert not [u for u in fs.list_multipart_uploads(object_store.bucket) if u["Key"] == mine]


def test_a_streamed_upload_the_store_refuses_falls_back_to_one_whole_upload(
    s3_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # a refused part fails the stream at once

    def refuse_parts(number: int, method: str, path: str) -> str | None:
        return "throttle" if sends_a_chunk(method, path) else None

    out, proxy = location(s3_store, fault=refuse_parts)
    with out.writer(out.join("result.bin")) as f:
        f.write(chunk(1) + b"the end")
    proxy.close()
    assert proxy.faults, "no part was sent"
    assert s3_store.fs().cat_file(s3_store.path("out/result.bin")) == chunk(1) + b"the end"
