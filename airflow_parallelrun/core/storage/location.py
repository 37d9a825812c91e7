"""Reach the run's storage through fsspec: join paths, read, write (atomically), retry transient errors."""

from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, TypeAlias

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from airflow_parallelrun.core.storage.atomic import (  # noqa: F401 (the storage API)
    ATOMIC_PUT_PROTOCOLS,
    has_atomic_put,
    local_writer,
    write_file,
    write_local_file,
)
from airflow_parallelrun.core.storage.retries import (  # noqa: F401 (the storage API)
    TRANSIENT_ERRORS,
    call_with_retries,
    is_transient,
    retrying,
    storage_retry_seconds,
)
from airflow_parallelrun.core.storage.streamed_upload import StreamedUpload, can_stream

log = logging.getLogger(__name__)

# How to reach storage: per URL prefix, fsspec options or a filesystem built from a Connection (with
# its credentials), set by the Airflow adapters. They live only in this process's memory: never in a
# manifest, a status, a report or XCom.
Storage: TypeAlias = dict[str, Any] | AbstractFileSystem
_OPTIONS: dict[str, Storage] = {}


def _normal(url: str) -> str:
    """Spell a URL one way: ``mem:///a/b`` and ``mem://a/b`` are the same place.

    >>> _normal("lockedmem:///in/a.txt"), _normal("s3://bucket/x/"), _normal("/data/in/")
    ('lockedmem://in/a.txt', 's3://bucket/x', '/data/in')
    """
    if "://" in url:
        protocol, rest = url.split("://", 1)
        return f"{protocol}://{rest.lstrip('/')}".rstrip("/")
    return url.rstrip("/") or "/"


def set_storage_options(url_prefix: str, options: Storage) -> None:
    """Use ``options`` (fsspec options, or a filesystem) for every URL under ``url_prefix`` here."""
    _OPTIONS[_normal(url_prefix)] = options if isinstance(options, AbstractFileSystem) else dict(options)


def clear_storage_options() -> None:
    _OPTIONS.clear()


def options_for(url: str) -> Storage:
    """Return the storage options (or filesystem) of the longest registered prefix of ``url``, or none."""
    url, best = _normal(url), None
    for prefix in _OPTIONS:
        inside = url == prefix or url.startswith(prefix if prefix.endswith(("/", ":")) else prefix + "/")
        if inside and (best is None or len(prefix) > len(best)):
            best = prefix
    if best is None:
        return {}
    found = _OPTIONS[best]
    return found if isinstance(found, AbstractFileSystem) else dict(found)


def filesystem_of(url: str, storage: Storage | None = None) -> tuple[Any, str]:
    """Return the filesystem and path of ``url``: by ``storage`` (options, a filesystem) or as registered."""
    storage = options_for(url) if storage is None else storage
    if isinstance(storage, AbstractFileSystem):
        return storage, storage._strip_protocol(url)
    return fsspec.core.url_to_fs(url, **storage)


def url_to_fs(url: str) -> tuple[Any, str]:
    """Return the filesystem and path of ``url``, with the storage options registered for it."""
    return filesystem_of(url)


def open_url(url: str, mode: str = "rb") -> Any:
    """Open ``url`` with the storage options registered for it."""
    fs, path = url_to_fs(url)
    return fs.open(path, mode)


def _one_request_reads(fs: Any) -> dict[str, Any]:
    """Return the ``cat_file`` options that read an object with one request (s3fs: no split)."""
    try:
        parameters = inspect.signature(fs.cat_file).parameters
    except (TypeError, ValueError):
        return {}
    return {"max_concurrency": 1} if "max_concurrency" in parameters else {}


class Location:
    """A folder (or file) on one fsspec filesystem, addressed by its URL."""

    def __init__(self, url: str, storage_options: Storage | None = None) -> None:
        self.url = str(url)
        self.fs, self.path = filesystem_of(self.url, storage_options)
        self.path = self.path.rstrip("/") or "/"
        self._small_read = _one_request_reads(self.fs)

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

    @retrying
    def read_small(self, path: str) -> bytes:
        """Read a small object (a record, a manifest shard) in one request.

        s3fs asks for an object's size before reading it whole, to split a big read into
        ranges: a HEAD first, and for a missing object a LIST too (to tell a folder). A record
        is small: it reads in one GET, or one answer that it is missing.
        """
        return bytes(self.fs.cat_file(path, **self._small_read))

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_small(path))

    def read_json_if_exists(self, path: str) -> Any:
        """Return the JSON at ``path``, or None if there is none: one read, no lookup first.

        On an object store ``exists()`` of a missing key costs two requests (s3fs asks for the
        object, then lists its name as a folder); a read that finds nothing costs one.
        """
        try:
            return self.read_json(path)
        except FileNotFoundError:
            return None

    @retrying
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` so a reader sees the old content or the new, never a part."""
        write_file(self.fs, path, data)

    def write_json(self, path: str, value: Any) -> None:
        self.write_bytes(path, json.dumps(value, indent=1, sort_keys=True, default=str).encode())

    @retrying
    def put_file(self, local_path: str, path: str) -> None:
        """Copy a local file to ``path`` atomically."""
        write_file(self.fs, path, source=local_path)

    @retrying
    def get_file(self, path: str, local_path: str) -> None:
        self.fs.get_file(path, local_path)

    @retrying
    def remove(self, path: str) -> None:
        if self._exists(path):
            self.fs.rm(path, recursive=True)

    @retrying
    def discard(self, path: str) -> None:
        """Remove the file at ``path`` if there is one: one delete, no lookup first."""
        with suppress(FileNotFoundError):
            self.fs.rm_file(path)

    @retrying
    def listdir(self, path: str) -> list[str]:
        """Return the paths in the folder ``path``, sorted; none if there is no such folder.

        One listing, no lookup first: on an object store a lookup of a folder is a request or
        two more (s3fs asks for an object of that name, then lists the name as a prefix).
        """
        try:
            return sorted(self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    @contextmanager
    def writer(self, path: str) -> Iterator[BinaryIO]:
        """Stream into a temporary file, then publish it at ``path`` in one step.

        On local disk the temporary file sits next to ``path`` and is fsynced, then renamed;
        elsewhere it is a local file published with :meth:`put_file`. On S3 and Azure Blob its
        chunks are uploaded while the block still writes, and published in one step at the end
        (``storage/streamed_upload.py``). If the block raises, nothing is published and the
        temporary file is removed.
        """
        if self.is_local:
            with local_writer(path) as write:
                yield write.file
            return
        fd, tmp = tempfile.mkstemp(prefix="parallelrun-", suffix=".tmp")
        os.close(fd)
        upload = StreamedUpload(self.fs, tmp, path).start() if can_stream(self.fs) else None
        try:
            with open(tmp, "wb") as f:
                yield f
            if upload is None or not upload.publish():
                self.put_file(tmp, path)
        finally:
            if upload is not None:
                upload.discard()  # after a publish, nothing is left to discard
            with suppress(FileNotFoundError):
                os.unlink(tmp)
