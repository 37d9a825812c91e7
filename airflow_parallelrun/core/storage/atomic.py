"""Write a file so that no reader, crash or power loss ever sees a part of it.

The one copy of the write-fsync-rename sequence: :func:`local_writer`. Everything that
publishes a local file (a status, a part, a claim, a failpoint's marker) goes through it.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from airflow_parallelrun.core.failpoints import failpoint

log = logging.getLogger(__name__)

# Filesystems whose single put is atomic: a reader sees the old object or the new, never a part.
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "oss", "oci", "r2"})


def has_atomic_put(fs: Any) -> bool:
    """Tell whether one put publishes a whole file on ``fs`` (object stores, fsspec's memory)."""
    if isinstance(fs, MemoryFileSystem):
        return True
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in ATOMIC_PUT_PROTOCOLS for p in protocols)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` survive a power loss (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class LocalWrite:
    """The open temporary file of :func:`local_writer`, and whether the name was taken."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.published = False


@contextmanager
def local_writer(path: str, *, exclusive: bool = False, durable: bool = True) -> Iterator[LocalWrite]:
    """Stream into a temporary file next to the local ``path``, then publish it under that name.

    The bytes are fsynced before the rename and the folder after it: after a crash or a power
    loss ``path`` holds the old content or the whole new one, never a part. With ``exclusive``
    the name is taken only if it is free (a hard link); ``published`` tells whether it was. If
    the block raises, nothing is published. The temporary file is always removed. ``durable=False``
    leaves out the fsyncs, for a record that is rewritten soon anyway (a reader still never sees
    a part of it; a power loss may lose the last version).
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            write = LocalWrite(f)
            yield write
            f.flush()
            if durable:
                os.fsync(f.fileno())
        failpoint(f"replace:{os.path.basename(path)}")
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return
        else:
            os.replace(tmp, path)
        if durable:
            _fsync_folder(folder)
        write.published = True
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def write_local_file(
    path: str,
    data: bytes | None = None,
    *,
    source: str | None = None,
    exclusive: bool = False,
    durable: bool = True,
) -> bool:
    """Write ``data`` (or a copy of the local file ``source``) to the local ``path`` atomically.

    See :func:`local_writer`; the return value tells whether this call published the file
    (always, unless ``exclusive`` found the name taken).
    """
    with local_writer(path, exclusive=exclusive, durable=durable) as write:
        if source is not None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, write.file, 1024 * 1024)
        else:
            write.file.write(data or b"")
    return write.published


def link_in_place(target: str, link: str) -> None:
    """Make ``link`` a symbolic link to ``target``, replacing what is there in one rename.

    Two processes may link at once: each makes its own link under a temporary name.
    """
    temporary = f"{link}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    os.symlink(target, temporary)
    try:
        os.replace(temporary, link)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def move_into_place(building: str, final: str) -> None:
    """Publish the local folder ``building`` (made complete beside it) as ``final`` in one rename.

    Raises ``OSError`` when ``final`` exists already (another process published it first).
    """
    os.rename(building, final)


def write_file(fs: Any, path: str, data: bytes | None = None, *, source: str | None = None) -> None:
    """Write ``data`` (or the local file ``source``) to ``path`` on ``fs`` so no reader sees a part.

    Local disk: see :func:`write_local_file`. Object stores: one put (S3's PutObject, or its
    multipart upload, which publishes nothing until its completion; Azure's Put Blob, or staged
    blocks published by one Put Block List), so an upload killed midway leaves the old object or
    none. Any other filesystem (sftp, ftp, webdav, ...): a put to ``<path>.tmp-<uuid>`` and then
    a move, so a write that breaks off midway leaves at most a temporary file, removed when the
    filesystem lets us, never a partial file under ``path``. The failpoint ``replace:<name>`` is
    where the name is about to be published, on every filesystem.
    """
    if isinstance(fs, LocalFileSystem):
        write_local_file(path, data, source=source)
        return
    if has_atomic_put(fs):
        failpoint(f"replace:{posixpath.basename(path)}")
        _put(fs, path, data, source)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        _put(fs, tmp, data, source)
        failpoint(f"replace:{posixpath.basename(path)}")
        fs.mv(tmp, path)
    except BaseException:
        _remove_stray(fs, tmp)
        raise


def _put(fs: Any, path: str, data: bytes | None, source: str | None) -> None:
    if source is not None:
        fs.put_file(source, path)
    else:
        fs.pipe_file(path, data)


def _remove_stray(fs: Any, tmp: str) -> None:
    try:
        if fs.exists(tmp):
            fs.rm(tmp)
    except Exception as exc:
        # The write's own error matters more; a storage still failing may keep the stray file.
        log.warning(
            "could not remove the temporary file %s after a failed write: %s: %s",
            tmp,
            type(exc).__name__,
            exc,
        )
