"""An upload to S3 or Azure Blob killed midway leaves the old object under the name, never a part.

Object stores have no rename: ``write_file`` publishes with one put. A file too big for one
request goes up in parts (S3's multipart upload; Azure's staged blocks), which the store
publishes only when the upload completes (CompleteMultipartUpload; Put Block List). Here a real
process uploads a file through ``Location.put_file`` and is SIGKILLed by the proxy in front of the
server when its first part arrives: the name must still hold the old object.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.object_stores import ObjectStore

pytestmark = pytest.mark.slow

#: Big enough to go up in parts: s3fs uploads in one request below 100 MiB, Azure below 64 MiB.
SIZES = {"s3": 101 * 2**20, "azure": 65 * 2**20}

UPLOAD = """
import sys
from airflow_parallelrun.core.storage.location import Location
from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

url, conn_id, local = sys.argv[1:]
location = Location(url, ParallelRunStorageHook(conn_id).filesystem(url))
location.put_file(local, location.path)
"""


def test_an_upload_killed_after_its_first_part_leaves_the_old_object(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    object_store.put("out/result.bin", b"the old result")
    local = tmp_path / "result.bin"
    with local.open("wb") as f:
        f.truncate(SIZES[object_store.kind])
    child: list[subprocess.Popen[bytes]] = []

    def kill_at_first_part(number: int, method: str, path: str) -> str | None:
        if method == "PUT" and ("partNumber=" in path or "comp=block" in path):
            os.kill(child[0].pid, signal.SIGKILL)
            return "drop"
        return None

    proxied = object_store.behind_proxy(fault=kill_at_first_part)
    env = {**os.environ, f"AIRFLOW_CONN_{proxied.conn_id.upper()}": json.dumps(proxied.connection())}
    child.append(
        subprocess.Popen(
            [sys.executable, "-c", UPLOAD, proxied.url("out/result.bin"), proxied.conn_id, str(local)],
            env=env,
            stderr=subprocess.PIPE,
        )
    )
    _, stderr = child[0].communicate(timeout=300)
    assert child[0].returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert proxied.proxies[0].faults, "the upload was never seen sending a part"
    # The name holds the old object, whole: the parts sent before the kill are not published.
    assert object_store.fs().cat_file(object_store.path("out/result.bin")) == b"the old result"
