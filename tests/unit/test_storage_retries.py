"""Which storage errors are retried (core/storage/retries.py), for how long, and what is said when
they persist.

The errors of the cloud and HTTP libraries are matched by module and class name, so these tests
build classes that sit where those libraries put theirs (``aiohttp.client_exceptions``,
``botocore.exceptions``...) without installing them.
"""

from __future__ import annotations

import errno
import time
from typing import Any

import pytest

from airflow_parallelrun.core.errors import StorageError
from airflow_parallelrun.core.storage import retries
from airflow_parallelrun.core.storage.retries import call_with_retries, is_transient, storage_retry_seconds
from tests.unit.virtual_clock import VirtualClock


def library_error(module: str, name: str, base: type[Exception] = Exception, **attrs: Any) -> type[Exception]:
    """Return an exception class named and placed as a library's own."""
    return type(name, (base,), {"__module__": module, **attrs})


@pytest.fixture
def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    monkeypatch.delenv(retries.RETRY_SECONDS_ENV, raising=False)
    clock = VirtualClock()
    monkeypatch.setattr(retries, "clock", clock)
    return clock


# aiohttp's connection errors subclass ClientError(Exception), not the builtin ConnectionError.
AiohttpClientError = library_error("aiohttp.client_exceptions", "ClientError")
AiohttpConnectionError = library_error(
    "aiohttp.client_exceptions", "ClientConnectionError", AiohttpClientError
)
AiohttpServerDisconnected = library_error(
    "aiohttp.client_exceptions", "ServerDisconnectedError", AiohttpConnectionError
)


@pytest.mark.parametrize(
    "error",
    [
        AiohttpServerDisconnected("Server disconnected"),
        library_error("aiohttp.client_exceptions", "ClientPayloadError", AiohttpClientError)("cut"),
        library_error("requests.exceptions", "ConnectionError", OSError)("Connection aborted"),
        library_error("requests.exceptions", "ReadTimeout", library_error("requests.exceptions", "Timeout"))(
            "t"
        ),
        library_error("urllib3.exceptions", "ProtocolError")("Connection broken"),
        library_error("botocore.exceptions", "EndpointConnectionError")("Could not connect"),
        library_error("botocore.exceptions", "ReadTimeoutError")("Read timeout"),
        library_error("azure.core.exceptions", "ServiceResponseError")("Connection reset"),
        library_error("google.api_core.exceptions", "ServiceUnavailable")("503"),
        library_error("fsspec.exceptions", "FSTimeoutError")(),
        OSError(errno.ECONNRESET, "Connection reset by peer"),
        ConnectionRefusedError("refused"),
    ],
    ids=lambda e: f"{type(e).__module__}.{type(e).__name__}",
)
def test_connection_and_timeout_errors_of_storage_libraries_are_transient(error):
    assert is_transient(error)


def test_throttling_and_server_failures_are_transient_but_client_errors_are_not():
    ClientError = library_error("botocore.exceptions", "ClientError")

    def boto(code: str, status: int) -> Exception:
        exc = ClientError(code)
        exc.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}  # type: ignore[attr-defined]
        return exc

    HttpError = library_error("gcsfs.retry", "HttpError")
    ResponseError = library_error("aiohttp.client_exceptions", "ClientResponseError", AiohttpClientError)
    AzureHttpError = library_error("azure.core.exceptions", "HttpResponseError")

    def with_attr(cls: type[Exception], **attrs: Any) -> Exception:
        exc = cls("http")
        for k, v in attrs.items():
            setattr(exc, k, v)
        return exc

    assert is_transient(boto("SlowDown", 503)) and is_transient(boto("Throttling", 400))
    assert is_transient(with_attr(HttpError, code=429)) and is_transient(with_attr(HttpError, code=502))
    assert is_transient(with_attr(ResponseError, status=503))
    assert is_transient(with_attr(AzureHttpError, status_code=500))
    assert not is_transient(boto("AccessDenied", 403)) and not is_transient(boto("NoSuchKey", 404))
    assert not is_transient(with_attr(HttpError, code=403)) and not is_transient(
        with_attr(ResponseError, status=404)
    )
    # s3fs raises an OSError from botocore's throttling error: the cause decides.
    try:
        raise OSError(errno.EIO, "Please reduce your request rate") from boto("SlowDown", 503)
    except OSError as exc:
        assert is_transient(exc)
    # A code on an error of no storage library means nothing.
    assert not is_transient(with_attr(ValueError, code=503))


def test_missing_files_permissions_and_bad_values_are_not_transient():
    for error in (
        FileNotFoundError("gone"),
        PermissionError("no"),
        ValueError("bad"),
        OSError(errno.EIO, "x"),
    ):
        assert not is_transient(error)
    try:
        raise FileNotFoundError("gone") from ConnectionResetError()
    except FileNotFoundError as exc:
        assert not is_transient(exc), "a missing file stays missing, whatever happened on the way"


def test_an_aiohttp_connection_error_is_retried_for_the_budget_then_named_as_a_storage_error(virtual_clock):
    calls = []

    def cat_file(path: str) -> bytes:
        calls.append(virtual_clock.time)
        raise AiohttpServerDisconnected("Server disconnected")

    with pytest.raises(StorageError) as info:
        call_with_retries(cat_file, "s3://bucket/in/a.csv")

    message = str(info.value)
    assert "cat_file 's3://bucket/in/a.csv' kept failing" in message and "Server disconnected" in message
    assert retries.RETRY_SECONDS_ENV in message
    assert isinstance(info.value.__cause__, AiohttpServerDisconnected)
    assert not isinstance(info.value, (FileNotFoundError, ValueError))
    assert retries.DEFAULT_RETRY_SECONDS >= 60
    assert len(calls) > 5 and calls[-1] <= retries.DEFAULT_RETRY_SECONDS < calls[-1] + 10.5


def test_a_transient_error_that_clears_within_the_budget_is_not_seen(virtual_clock):
    tries = []

    def read(path: str) -> bytes:
        tries.append(path)
        if len(tries) < 8:
            raise library_error("botocore.exceptions", "ConnectionClosedError")("closed")
        return b"data"

    assert call_with_retries(read, "s3://b/k") == b"data"
    assert len(tries) == 8 and virtual_clock.time > 20, "longer than the old 3-second budget"


def test_a_permanent_error_is_raised_at_once(virtual_clock):
    tries = []

    def read(path: str) -> bytes:
        tries.append(path)
        raise FileNotFoundError(path)

    with pytest.raises(FileNotFoundError):
        call_with_retries(read, "s3://b/k")
    assert len(tries) == 1 and virtual_clock.time == 0


def test_the_budget_comes_from_the_environment_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(retries.RETRY_SECONDS_ENV, "0.3")
    assert storage_retry_seconds() == 0.3
    tries = []

    def read(path: str) -> bytes:
        tries.append(time.monotonic())
        raise TimeoutError("timed out")

    with pytest.raises(StorageError, match=r"PARALLELRUN_STORAGE_RETRY_SECONDS=0.3 seconds"):
        call_with_retries(read, "gs://b/k")
    assert len(tries) >= 2, "retried on the real clock within the budget"

    monkeypatch.setenv(retries.RETRY_SECONDS_ENV, "a minute")
    with pytest.raises(StorageError, match=r"PARALLELRUN_STORAGE_RETRY_SECONDS='a minute' is not a number"):
        storage_retry_seconds()
    monkeypatch.setenv(retries.RETRY_SECONDS_ENV, "0")
    tries.clear()
    with pytest.raises(StorageError):
        call_with_retries(read, "gs://b/k")
    assert len(tries) == 1
