"""Reach the run's storage through fsspec: join paths, write atomically, retry transient errors."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from airflow_parallelrun.core.errors import StorageError
from airflow_parallelrun.core.failpoints import failpoint

T = TypeVar("T")

# Connection resets and timeouts pass; a missing file or a permission error does not.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def _give_up(state: RetryCallState) -> NoReturn:
    """Raise a StorageError naming the call, its path and the tries, once a transient error persists."""
    exc = state.outcome.exception() if state.outcome is not None else None
    name = getattr(state.fn, "__name__", "storage call")
    args = [a for a in state.args if isinstance(a, str)][:1]
    where = f" {args[0]!r}" if args else ""
    raise StorageError(
        f"{name}{where} kept failing after {state.attempt_number} tries: {type(exc).__name__}: {exc}; "
        "check that the storage is reachable, then clear the task"
    ) from exc


retrying = retry(
    retry=retry_if_exception_type(TRANSIENT_ERRORS),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=0.2, max=5),
    retry_error_callback=_give_up,
)


# Storage options (credentials) per URL prefix, set by the Airflow adapters from Connections.
# They live only in this process's memory: never in a manifest, a status, a report or XCom.
_OPTIONS: dict[str, dict[str, Any]] = {}


def _normal(url: str) -> str:
    """Spell a URL one way: ``mem:///a/b`` and ``mem://a/b`` are the same place.

    >>> _normal("lockedmem:///in/a.txt"), _normal("s3://bucket/x/"), _normal("/data/in/")
    ('lockedmem://in/a.txt', 's3://bucket/x', '/data/in')
    """
    if "://" in url:
        protocol, rest = url.split("://", 1)
        return f"{protocol}://{rest.lstrip('/')}".rstrip("/")
    return url.rstrip("/") or "/"


def set_storage_options(url_prefix: str, options: dict[str, Any]) -> None:
    """Use ``options`` for every URL under ``url_prefix`` opened by this process."""
    _OPTIONS[_normal(url_prefix)] = dict(options)


def clear_storage_options() -> None:
    _OPTIONS.clear()


def options_for(url: str) -> dict[str, Any]:
    """Return the storage options of the longest registered prefix of ``url``, or none."""
    url, best = _normal(url), None
    for prefix in _OPTIONS:
        inside = url == prefix or url.startswith(prefix if prefix.endswith(("/", ":")) else prefix + "/")
        if inside and (best is None or len(prefix) > len(best)):
            best = prefix
    return dict(_OPTIONS[best]) if best is not None else {}


def url_to_fs(url: str) -> tuple[Any, str]:
    """Return the filesystem and path of ``url``, with the storage options registered for it."""
    return fsspec.core.url_to_fs(url, **options_for(url))


def open_url(url: str, mode: str = "rb") -> Any:
    """Open ``url`` with the storage options registered for it."""
    fs, path = url_to_fs(url)
    return fs.open(path, mode)


class Location:
    """A folder (or file) on one fsspec filesystem, addressed by its URL."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(url)
        options = storage_options if storage_options is not None else options_for(self.url)
        self.fs, self.path = fsspec.core.url_to_fs(self.url, **options)
        self.path = self.path.rstrip("/") or "/"

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def join(self, *parts: str) -> str:
        """Return the filesystem path of ``parts`` under this location."""
        return "/".join([self.path.rstrip("/"), *(p.strip("/") for p in parts)])

    def url_of(self, path: str) -> str:
        """Return the URL a user can open for a filesystem path of this location."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def _exists(self, path: str) -> bool:
        # fsspec's generic exists() answers False for any error, a timeout included: ask info().
        try:
            self.fs.info(path)
        except FileNotFoundError:
            return False
        return True

    @retrying
    def exists(self, path: str) -> bool:
        return self._exists(path)

    @retrying
    def read_bytes(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    @retrying
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` so a reader sees the old content or the new, never a part."""
        if self.is_local:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            failpoint(f"replace:{os.path.basename(path)}")
            os.replace(tmp, path)
        else:
            # One put is atomic on object stores; other filesystems get write-then-move.
            self.fs.pipe_file(path, data)

    def write_json(self, path: str, value: Any) -> None:
        self.write_bytes(path, json.dumps(value, indent=1, sort_keys=True, default=str).encode())

    @retrying
    def put_file(self, local_path: str, path: str) -> None:
        """Copy a local file to ``path`` atomically."""
        if self.is_local:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
            shutil.copyfile(local_path, tmp)
            failpoint(f"replace:{os.path.basename(path)}")
            os.replace(tmp, path)
        else:
            self.fs.put_file(local_path, path)

    @retrying
    def get_file(self, path: str, local_path: str) -> None:
        self.fs.get_file(path, local_path)

    @retrying
    def remove(self, path: str) -> None:
        if self._exists(path):
            self.fs.rm(path, recursive=True)

    @retrying
    def listdir(self, path: str) -> list[str]:
        if not self._exists(path):
            return []
        return sorted(self.fs.ls(path, detail=False))

    @contextmanager
    def writer(self, path: str) -> Iterator[Any]:
        """Stream into a local temporary file, then publish it at ``path`` in one step."""
        fd, tmp = tempfile.mkstemp(prefix="parallelrun-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            self.put_file(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def call_with_retries(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` retrying transient storage errors with backoff."""
    return retrying(fn)(*args, **kwargs)
