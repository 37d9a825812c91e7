"""The real object stores the tests run on: S3 (moto's server) and Azure Blob Storage (Azurite).

``object_store`` is a fixture parametrised over the two (``s3`` and ``azure``). Each store's server
is started once per test session on a free port of 127.0.0.1 and stopped by process id at the end;
each test gets a folder of its own (``store.url("in")``) and an Airflow Connection of the store's
own type, set the way its provider documents it (``AIRFLOW_CONN_<ID>`` in the environment):

- S3: type ``aws``, the access key and secret as login and password, ``endpoint_url`` and
  ``region_name`` in the extra;
- Azure: type ``wasb`` with the account's connection string in its extra (``connection_string``),
  the form Microsoft documents for Azurite. The other documented form, the account name and key
  as login and password (``form="account_key"``), reaches only ``https://<account>.blob.core.windows.net``:
  adlfs builds the endpoint from the account name and takes no endpoint URL.

A server that cannot start skips its tests with the reason, or fails them under ``CI=true``.
``store.behind_proxy(delay=..., fault=...)`` gives the same folder through ``FaultyProxy``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from tests.databases import skip_or_fail
from tests.servers import azurite, moto_s3
from tests.servers.process import ServerProcess
from tests.servers.proxy import Fault, FaultyProxy

KINDS = ("s3", "azure")
SCHEMES = {"s3": "s3", "azure": "abfs"}
CONN_TYPES = {"s3": "aws", "azure": "wasb"}


@dataclass
class ObjectStore:
    """One test's folder on a real object store, and the Airflow Connection that reaches it."""

    kind: str
    port: int
    bucket: str
    prefix: str
    conn_id: str
    form: str = "connection_string"
    proxies: list[FaultyProxy] = field(default_factory=list)

    @property
    def secret(self) -> str:
        """The credential the Connection carries (what must never appear in logs, XCom or storage)."""
        return moto_s3.SECRET_KEY if self.kind == "s3" else azurite.ACCOUNT_KEY

    def url(self, *parts: str) -> str:
        """Return the URL of ``parts`` under this test's folder, e.g. ``s3://bucket/t-1a2b/in``."""
        tail = "/".join(p.strip("/") for p in (self.prefix, *parts) if p)
        return f"{SCHEMES[self.kind]}://{self.bucket}/{tail}"

    def endpoint(self) -> str:
        if self.kind == "s3":
            return f"http://127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}/{azurite.ACCOUNT}"

    def connection(self, form: str | None = None) -> dict[str, Any]:
        """Return the Connection in a form its provider documents (Azure: connection_string, account_key)."""
        form = form or self.form
        if self.kind == "s3":
            return {
                "conn_type": "aws",
                "login": moto_s3.ACCESS_KEY,
                "password": moto_s3.SECRET_KEY,
                "extra": {"endpoint_url": self.endpoint(), "region_name": moto_s3.REGION},
            }
        if form == "connection_string":
            return {
                "conn_type": "wasb",
                "extra": {
                    "connection_string": (
                        f"DefaultEndpointsProtocol=http;AccountName={azurite.ACCOUNT};"
                        f"AccountKey={azurite.ACCOUNT_KEY};BlobEndpoint={self.endpoint()};"
                    )
                },
            }
        return {
            "conn_type": "wasb",
            "login": azurite.ACCOUNT,
            "password": azurite.ACCOUNT_KEY,
            "host": self.endpoint(),
        }

    def connection_json(self, form: str | None = None) -> str:
        """Return the Connection as an ``AIRFLOW_CONN_<ID>`` value."""
        return json.dumps(self.connection(form))

    def env(self) -> dict[str, str]:
        """Return the environment that defines this store's Connection (for Airflow processes of a test)."""
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": self.connection_json()}

    def fs(self) -> Any:
        """Return a filesystem on this store, built as the package builds it (for a test's own checks)."""
        os.environ.update(self.env())
        from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

        return ParallelRunStorageHook(self.conn_id).filesystem(self.url())

    def path(self, *parts: str) -> str:
        """Return the filesystem path (no scheme) of ``parts``, for ``self.fs()``."""
        return self.url(*parts).split("://", 1)[1]

    def put(self, name: str, data: bytes) -> str:
        """Write ``data`` at ``name`` under the test's folder; return its URL."""
        self.fs().pipe_file(self.path(name), data)
        return self.url(name)

    def behind_proxy(
        self, delay: float = 0.0, fault: Fault | None = None, conn_id: str | None = None
    ) -> ObjectStore:
        """Return this folder reached through a ``FaultyProxy`` (a Connection of its own)."""
        proxy = FaultyProxy(self.port, delay=delay, fault=fault)
        self.proxies.append(proxy)
        return replace(
            self,
            port=proxy.port,
            conn_id=conn_id or f"{self.conn_id}_proxy{len(self.proxies)}",
            proxies=[proxy],
        )


_SERVERS: dict[str, ServerProcess | Exception] = {}
_BUCKETS: dict[str, str] = {}


def _server(kind: str) -> ServerProcess:
    if kind not in _SERVERS:
        try:
            _SERVERS[kind] = moto_s3.start() if kind == "s3" else azurite.start()
        except Exception as exc:  # a server that cannot start: every test of its kind says why
            _SERVERS[kind] = exc
    found = _SERVERS[kind]
    if isinstance(found, Exception):
        skip_or_fail(f"the {kind} test server cannot start: {found}")
        raise AssertionError("unreachable")
    return found


def stop_servers() -> None:
    """Stop every server started by the tests (conftest calls this when the session ends)."""
    for server in _SERVERS.values():
        if isinstance(server, ServerProcess):
            server.stop()
    _SERVERS.clear()


def make_store(kind: str, conn_id: str | None = None) -> ObjectStore:
    """Return a fresh folder on the ``kind`` store (its server started once), with its bucket made."""
    server = _server(kind)
    store = ObjectStore(
        kind=kind,
        port=server.port,
        bucket=_BUCKETS.setdefault(kind, f"parallelrun-{uuid.uuid4().hex[:8]}"),
        prefix=f"t-{uuid.uuid4().hex[:10]}",
        conn_id=conn_id or f"store_{kind}_{uuid.uuid4().hex[:6]}",
    )
    fs = store.fs()
    if not fs.exists(store.bucket):
        fs.mkdir(store.bucket)
    return store


def _store_for_test(kind: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    store = make_store(kind)
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    yield store
    for proxy in store.proxies:
        proxy.close()


@pytest.fixture(params=KINDS)
def object_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """A folder of this test's own on S3 (moto) and on Azure Blob (Azurite), with its Connection set."""
    yield from _store_for_test(request.param, monkeypatch)


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """A folder of this test's own on S3 (moto) only, for what is an S3 matter."""
    yield from _store_for_test("s3", monkeypatch)


@pytest.fixture
def azure_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """A folder of this test's own on Azure Blob (Azurite) only, for what is an Azure matter."""
    yield from _store_for_test("azure", monkeypatch)
