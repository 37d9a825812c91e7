"""Read the footers of many parquet files on an object store together, not one round trip each.

Splitting a parquet input needs each file's footer (its row groups). Opened one by one, even
in threads, the reads start one after another as each thread gets its turn, and the
partition waits a round trip for several of them in a row. Here the last bytes of each listed
file (its size is known from the listing) are asked for in one batch of ranged reads on the
filesystem's event loop (fsspec's ``cat_ranges``): a round trip for the whole batch. A
footer longer than the bytes read, a read that failed, or a filesystem that is not
asynchronous leaves ``None`` for that file: the caller reads it the usual way.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

from fsspec.asyn import AsyncFileSystem

from airflow_parallelrun.core.storage.location import url_to_fs

log = logging.getLogger(__name__)

#: Bytes read from the end of a file: pyarrow's own first read of a footer.
TAIL_BYTES = 64 * 1024
#: Files whose tails are asked for at once (their bytes are held until split).
TAILS_AT_ONCE = 64


def footer_tails(files: list[tuple[str, int | None]]) -> Iterator[bytes | None]:
    """Yield the last ``TAIL_BYTES`` of each listed ``(url, size)``, in order; None where not read."""
    for start in range(0, len(files), TAILS_AT_ONCE):
        yield from _chunk_tails(files[start : start + TAILS_AT_ONCE])


def _chunk_tails(files: list[tuple[str, int | None]]) -> list[bytes | None]:
    tails: list[bytes | None] = [None] * len(files)
    wanted: dict[int, list[tuple[int, str, int]]] = {}  # per filesystem: (place, path, size)
    filesystems: dict[int, Any] = {}
    for place, (url, size) in enumerate(files):
        fs, path = url_to_fs(url)
        if isinstance(fs, AsyncFileSystem) and size:
            filesystems[id(fs)] = fs
            wanted.setdefault(id(fs), []).append((place, path, int(size)))
    for key, entries in wanted.items():
        try:
            read = filesystems[key].cat_ranges(
                [path for _, path, _ in entries],
                [max(size - TAIL_BYTES, 0) for _, _, size in entries],
                [size for _, _, size in entries],
                on_error="return",
                batch_size=len(entries),
            )
        except Exception as exc:  # read one by one instead, with the storage retries
            log.info(
                "cannot read %d parquet footers together (%s: %s)", len(entries), type(exc).__name__, exc
            )
            continue
        for (place, _, _), data in zip(entries, read, strict=True):
            tails[place] = bytes(data) if isinstance(data, (bytes, bytearray)) else None
    return tails


def metadata_of(tail: bytes) -> Any:
    """Return the parquet metadata in the last bytes of a file, or None if the footer is longer."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(io.BytesIO(tail)).metadata
    except Exception:  # longer than the bytes read, or not parquet: the usual read says which
        return None


__all__ = ["TAIL_BYTES", "footer_tails", "metadata_of"]
