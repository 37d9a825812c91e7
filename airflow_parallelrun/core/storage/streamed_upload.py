"""Upload a local file to an object store while it is still being written, published only at the end.

The merged output used to be written whole to a local temporary file and uploaded after: on S3
behind a round trip of tens of milliseconds that upload followed the merge and was most of the
aggregate's time. :class:`StreamedUpload` sends the bytes the writer has already written, a
chunk at a time, from a thread, while the writer goes on; at the end it sends the rest and
publishes the object in one step.

Atomic as a single put: the chunks are S3 multipart-upload parts (s3fs's ``S3File``) or Azure
staged blocks (adlfs's ``AzureBlobFile``), which no reader sees under the object's name until
their completion (``CompleteMultipartUpload``, ``Put Block List``), the last call. A writer that
raises, or a process killed midway, publishes nothing (an S3 upload is aborted; Azure drops
blocks never committed). If the streamed upload fails, the whole local file is put again the
usual way, with the storage retries: a slow or faulty store costs what it cost before, no more.
"""

from __future__ import annotations

import logging
import os
import posixpath
import threading
import time
from typing import Any

from airflow_parallelrun.core.failpoints import failpoint

log = logging.getLogger(__name__)

#: The stores whose fsspec file objects upload in parts and publish only when closed.
STREAMED_PROTOCOLS = frozenset({"s3", "s3a", "abfs", "abfss", "az"})
#: Bytes per part (S3 wants at least 5 MiB but for the last): what is sent once written.
CHUNK = 16 * 2**20
#: Tries at aborting an unfinished upload (its parts are invisible, but they take space until then).
DISCARD_TRIES = 3


def can_stream(fs: Any) -> bool:
    """Tell whether ``fs`` takes a streamed upload (an S3 or Azure Blob filesystem)."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in STREAMED_PROTOCOLS for p in protocols)


class StreamedUpload:
    """Send the local file ``local`` to ``path`` on ``fs`` as it grows; :meth:`publish` ends it.

    Call :meth:`start` once the file exists, :meth:`publish` once it is complete and closed
    (returns whether the streamed upload published it: if not, a file smaller than one chunk
    or a stream that failed, the caller puts the whole file itself), or :meth:`discard` when
    the writer failed.
    """

    def __init__(self, fs: Any, local: str, path: str, chunk: int = CHUNK) -> None:
        self.fs, self.local, self.path, self.chunk = fs, local, path, chunk
        self.sent = 0
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._remote: Any = None
        self._thread = threading.Thread(target=self._send_chunks, name="parallelrun-upload", daemon=True)

    def start(self) -> StreamedUpload:
        self._thread.start()
        return self

    def _send_chunks(self) -> None:
        """Send every whole chunk written so far, until the writer is done (or an error)."""
        try:
            with open(self.local, "rb") as f:
                while True:
                    finished = self._done.is_set()
                    while os.path.getsize(self.local) - self.sent >= self.chunk:
                        self._send(f, self.chunk)
                    if finished:
                        return
                    self._done.wait(0.05)
        except BaseException as exc:  # the caller decides: it puts the whole file instead
            self.error = exc

    def _send(self, f: Any, size: int) -> None:
        if self._remote is None:  # opened at the first whole chunk: a smaller file is put as one
            self._remote = self.fs.open(self.path, "wb", block_size=self.chunk)
        f.seek(self.sent)
        data = f.read(size)
        self._remote.write(data)  # a whole chunk: the file object uploads it as one part
        self.sent += len(data)

    def publish(self) -> bool:
        """Send the rest of the complete local file and publish the object; tell whether it was."""
        self._done.set()
        self._thread.join()
        if self._remote is None and self.error is None:
            return False  # not a whole chunk: the caller puts it in one request, as before
        if self.error is None:
            try:
                with open(self.local, "rb") as f:
                    self._send(f, os.path.getsize(self.local) - self.sent)
                failpoint(f"replace:{posixpath.basename(self.path)}")
                self._remote.close()  # the completion: the object appears whole, now
                return True
            except Exception as exc:
                self.error = exc
        log.warning(
            "the streamed upload of %s failed (%s: %s); uploading the whole file instead",
            self.path,
            type(self.error).__name__,
            self.error,
        )
        self.discard()
        return False

    def discard(self) -> None:
        """Give the upload up: nothing is published (an S3 multipart upload is aborted)."""
        self._done.set()
        self._thread.join()
        if self._remote is not None and not self._remote.closed:
            for attempt in range(1, DISCARD_TRIES + 1):
                try:
                    self._remote.discard()
                    break
                except Exception as exc:  # a busy store: try again; the upload stays unpublished anyway
                    log.warning(
                        "giving up the unfinished upload of %s failed, try %d of %d (%s: %s)",
                        self.path,
                        attempt,
                        DISCARD_TRIES,
                        type(exc).__name__,
                        exc,
                    )
                    time.sleep(0.2 * attempt)
            self._remote.closed = True  # closing it must never complete the upload


__all__ = ["CHUNK", "STREAMED_PROTOCOLS", "StreamedUpload", "can_stream"]
