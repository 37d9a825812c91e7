"""The S3 store of ``--store s3``: moto's server behind a proxy that adds latency to every request.

Started as the tests start them (``tests/servers/moto_s3.py``, ``python -m tests.servers.proxy``),
each a child process stopped by process id at the end. Our operator reaches the store through an
Airflow Connection of type ``aws`` (endpoint and region in its extra, as the Amazon provider
documents it); the process-pool baseline through s3fs with the same endpoint, so both pay the
same latency per request. Inputs are uploaded once per invocation and outputs downloaded after
the clock stops, to be digested as the local ones are.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.servers import moto_s3
from tests.servers.process import ServerProcess

CONN_ID = "parallelrun_bench_s3"
BUCKET = "parallelrun-bench"
#: The environment variable that hands the baseline its s3fs options (never its command line).
OPTIONS_ENV = "PARALLELRUN_BENCH_S3_OPTIONS"


class RemoteStore:
    """moto's S3 server and a ``FaultyProxy`` adding ``latency_ms`` to each request, both child processes."""

    def __init__(self, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        self.server: ServerProcess | None = None
        self.proxy: ServerProcess | None = None

    def start(self) -> RemoteStore:
        self.server = moto_s3.start()
        command = [sys.executable, "-m", "tests.servers.proxy", "--upstream", str(self.server.port)]
        command += ["--delay", str(self.latency_ms / 1000)]
        self.proxy = ServerProcess("latency proxy", command, r"proxy listening on 127\.0\.0\.1:(?P<port>\d+)")
        self.proxy.start()
        self.fs().mkdir(BUCKET)
        return self

    def stop(self) -> None:
        for process in (self.proxy, self.server):
            if process is not None:
                process.stop()

    def endpoint(self, *, direct: bool = False) -> str:
        assert self.server is not None and self.proxy is not None
        return f"http://127.0.0.1:{(self.server if direct else self.proxy).port}"

    def storage_options(self, *, direct: bool = False) -> dict[str, Any]:
        """Return s3fs's options for the store: through the proxy, or ``direct`` (set-up, not timed)."""
        return {
            "key": moto_s3.ACCESS_KEY,
            "secret": moto_s3.SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint(direct=direct), "region_name": moto_s3.REGION},
        }

    def fs(self) -> Any:
        import s3fs

        options = self.storage_options(direct=True)
        # us-east-1 is S3's default: named, it makes s3fs send a location constraint moto refuses.
        options["client_kwargs"].pop("region_name")
        return s3fs.S3FileSystem(**options, skip_instance_cache=True)

    def connection_env(self) -> dict[str, str]:
        """Return the Airflow Connection (type ``aws``, through the proxy) as users set it."""
        conn = {
            "conn_type": "aws",
            "login": moto_s3.ACCESS_KEY,
            "password": moto_s3.SECRET_KEY,
            "extra": {"endpoint_url": self.endpoint(), "region_name": moto_s3.REGION},
        }
        return {f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn)}

    def baseline_env(self) -> dict[str, str]:
        return {OPTIONS_ENV: json.dumps(self.storage_options())}

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{BUCKET}", *(p.strip("/") for p in parts)])

    def upload(self, folder: Path, url: str) -> None:
        """Copy the files of ``folder`` to ``url`` (set-up, straight to the server: not timed)."""
        fs = self.fs()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            fs.put_file(str(path), f"{url}/{path.relative_to(folder).as_posix()}")

    def download(self, url: str, folder: Path) -> None:
        """Copy what lies under ``url`` into ``folder`` (after the clock stops)."""
        fs = self.fs()
        prefix = url.split("://", 1)[1].rstrip("/")
        for key in fs.find(prefix):
            target = folder / key[len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(key, str(target))

    def remove(self, url: str) -> None:
        fs = self.fs()
        if fs.exists(url):
            fs.rm(url, recursive=True)
