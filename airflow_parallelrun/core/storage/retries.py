"""Retry storage calls that fail with a transient error, for a configurable time.

What is transient is decided by the error's class (by name and module, so that no cloud library
is imported or needed), its errno, its HTTP status or its object-store error code, along its
chain of causes. How long: ``PARALLELRUN_STORAGE_RETRY_SECONDS``, two minutes by default.
The retry loop itself is tenacity's, stopped by that budget on an injectable clock.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from airflow_parallelrun.core.errors import StorageConflict, StorageError

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How long a storage call is retried while it fails with a transient error, in seconds.
RETRY_SECONDS_ENV = "PARALLELRUN_STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0
_FIRST_WAIT, _MAX_WAIT = 0.2, 10.0

# Connection resets, timeouts and a store's "conflicting operation, retry" pass; a missing file or a
# permission error does not.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, StorageConflict)

# The connection, timeout and throttling errors of the libraries under fsspec's cloud and HTTP
# filesystems, matched by top-level module and class name (any base class counts), so that none
# of these libraries is imported, or needed, here.
TRANSIENT_CLASSES: dict[str, frozenset[str]] = {
    "aiohttp": frozenset(
        {
            "ClientConnectionError",
            "ClientConnectorError",
            "ClientOSError",
            "ClientPayloadError",
            "ServerDisconnectedError",
            "ServerTimeoutError",
            "ConnectionTimeoutError",
            "SocketTimeoutError",
        }
    ),
    "requests": frozenset({"ConnectionError", "Timeout", "ChunkedEncodingError"}),
    "urllib3": frozenset(
        {"ProtocolError", "TimeoutError", "NewConnectionError", "ReadTimeoutError", "ConnectTimeoutError"}
    ),
    "botocore": frozenset(
        {
            "ConnectionError",
            "HTTPClientError",
            "ReadTimeoutError",
            "ConnectTimeoutError",
            "ConnectionClosedError",
            "EndpointConnectionError",
            "ResponseStreamingError",
            "IncompleteReadError",
        }
    ),
    "azure": frozenset(
        {
            "ServiceRequestError",
            "ServiceResponseError",
            "ServiceRequestTimeoutError",
            "ServiceResponseTimeoutError",
            "IncompleteReadError",
        }
    ),
    "google": frozenset(
        {
            "ServiceUnavailable",
            "TooManyRequests",
            "GatewayTimeout",
            "BadGateway",
            "InternalServerError",
            "DeadlineExceeded",
            "TransportError",
        }
    ),
    "fsspec": frozenset({"FSTimeoutError"}),
    "http": frozenset({"IncompleteRead", "RemoteDisconnected"}),
}
#: HTTP statuses worth another try: request timeout, throttling, and the server's own failures.
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: The error codes object stores answer a throttled or failed request with (botocore's ClientError).
TRANSIENT_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "SlowDown",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "ServerBusy",
        "OperationTimedOut",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
    }
)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EPIPE,
        errno.EBUSY,
    }
)
# Answers no retry changes, whatever caused them.
_PERMANENT_ERRORS = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)


def _library(cls: type) -> str:
    return cls.__module__.split(".", 1)[0]


def _http_status(exc: BaseException) -> int | None:
    """Return the HTTP status a storage library's error carries, if it carries one."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    for name in ("status", "status_code", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _transient_alone(exc: BaseException) -> bool:
    """Tell whether ``exc`` itself, not its causes, is transient; the caller rules out permanent errors."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    for cls in type(exc).__mro__:
        if cls.__name__ in TRANSIENT_CLASSES.get(_library(cls), ()):
            return True
    if _library(type(exc)) not in TRANSIENT_CLASSES and _library(type(exc)) not in ("gcsfs", "adlfs", "s3fs"):
        return False
    # An HTTP error of a storage library: throttling and server failures pass, a 403 or 404 does not.
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in TRANSIENT_ERROR_CODES or _http_status(exc) in TRANSIENT_HTTP_STATUSES


def is_transient(exc: BaseException) -> bool:
    """Tell whether another try of the storage call that raised ``exc`` may succeed.

    A connection, timeout or throttling error is transient, whichever library raised it (the
    standard library, aiohttp, requests, urllib3, botocore, azure-core, google-api-core, s3fs,
    gcsfs, adlfs, fsspec), and so is an error caused by one, as s3fs raises an ``OSError`` from
    botocore's throttling error. A missing file, a denied permission or a bad request is not.

    >>> [is_transient(e) for e in (ConnectionResetError(), TimeoutError(), OSError(errno.ETIMEDOUT, "t"))]
    [True, True, True]
    >>> [is_transient(e) for e in (FileNotFoundError("gone"), ValueError("bad"), OSError(errno.EIO, "x"))]
    [False, False, False]
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _PERMANENT_ERRORS):
            return False
        if _transient_alone(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def storage_retry_seconds() -> float:
    """Return how long a failing storage call is retried: ``PARALLELRUN_STORAGE_RETRY_SECONDS``, or 120."""
    raw = os.environ.get(RETRY_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise StorageError(
            f"{RETRY_SECONDS_ENV}={raw!r} is not a number of seconds; set it to how long a failing "
            f"storage call is retried, e.g. {RETRY_SECONDS_ENV}=300, or unset it for "
            f"{DEFAULT_RETRY_SECONDS:g}"
        )
    return seconds


class RetryClock:
    """The clock the storage retries read and sleep on; a test swaps in one that does not sleep."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


clock = RetryClock()


# 0.2 s before the second try, doubling up to 10 s.
_WAIT = wait_exponential(multiplier=_FIRST_WAIT, exp_base=2, max=_MAX_WAIT)


class _BudgetSpent:
    """Stop before a retry whose wait would end past the budget, on :data:`clock`.

    tenacity's own ``stop_after_delay`` reads ``time.monotonic``; this one reads the injectable
    clock, so a test spends the budget without waiting it out.
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.started = clock.now()

    def spent(self) -> float:
        return clock.now() - self.started

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.spent() + _WAIT(retry_state) > self.budget


def _log_retry(retry_state: RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
    log.warning(
        "storage call %s failed (%s: %s); try %d, retrying in %.1f s",
        getattr(retry_state.fn, "__name__", "storage call"),
        type(exc).__name__,
        exc,
        retry_state.attempt_number,
        retry_state.next_action.sleep if retry_state.next_action is not None else 0.0,
    )


def retrying(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap a storage call so transient errors are retried, with backoff, for the retry budget.

    Once the budget (:func:`storage_retry_seconds`) is spent, raise a ``StorageError`` naming
    the call, its path, the tries and the last error, which stays its cause. Any other error
    passes at once.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> T:
        stop = _BudgetSpent(storage_retry_seconds())
        policy = Retrying(
            retry=retry_if_exception(is_transient),
            wait=_WAIT,
            stop=stop,
            sleep=lambda seconds: clock.sleep(seconds),
            before_sleep=_log_retry,
            retry_error_callback=lambda state: _give_up(state, stop),
        )
        return policy(fn, *args, **kwargs)

    return call


def _give_up(retry_state: RetryCallState, stop: _BudgetSpent) -> NoReturn:
    """Raise a StorageError naming the call, its path and the tries, once a transient error persists."""
    exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
    name = getattr(retry_state.fn, "__name__", "storage call")
    # The first path or URL among the arguments; else the path of the first that has one (a piece).
    args = retry_state.args
    paths = [a for a in args if isinstance(a, str)] or [
        a.path for a in args if isinstance(getattr(a, "path", None), str)
    ]
    paths = paths[:1]
    where = f" {paths[0]!r}" if paths else ""
    raise StorageError(
        f"{name}{where} kept failing after {retry_state.attempt_number} tries over {stop.spent():.1f} s: "
        f"{type(exc).__name__}: {exc}; "
        f"the storage did not recover within {RETRY_SECONDS_ENV}={stop.budget:g} seconds: check that it is "
        "reachable (or allow it longer), then clear the task"
    ) from exc


def call_with_retries(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` retrying transient storage errors with backoff."""
    return retrying(fn)(*args, **kwargs)
