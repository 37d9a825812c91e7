"""Split an input into mini-batches: files by count, tables by bytes or rows."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from airflow_parallelrun.core.errors import InputError, StorageError
from airflow_parallelrun.core.inputs.datasets import Dataset, FileDataset, TabularDataset
from airflow_parallelrun.core.inputs.minibatch import MiniBatch, TabularPiece
from airflow_parallelrun.core.inputs.paths import check_path, is_within, local_escape
from airflow_parallelrun.core.sizes import MiniBatchSize
from airflow_parallelrun.core.storage.location import (
    Location,
    call_with_retries,
    open_url,
    url_to_fs,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

NO_FILES_NOTE = "the input matched no files: the run has zero mini-batches and succeeds with zero items"
_SCAN_BLOCK = 8 * 1024 * 1024
_PIECE = re.compile(r"^(.+)\[(bytes|rows|row_groups)=(\d+):(\d+)\]$")


def end_minus_start(piece: TabularPiece) -> int | None:
    """Return the rows a piece holds when its range counts rows, else None (unknown until read)."""
    return piece.end - piece.start if piece.unit == "rows" else None


Listed = tuple[list[tuple[str, int | None]], list[dict[str, str]], str, list[str]]


def _version(info: dict[str, Any]) -> str:
    """Return what tells one version of a listed file from another: size and modification time."""
    stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created") or ""
    return f"{info.get('size')}:{stamp}"


def _fingerprint(entries: list[str]) -> str:
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def list_input_files(dataset: Dataset) -> Listed:
    """Return ``(url, size)`` of every input file, sorted; the inputs refused for safety; a fingerprint;
    the repeats dropped from an explicit list of files (each file is scored once, first place kept).

    A folder is listed with one call. A local file that is a symlink leading out of the input
    folder is refused, not read: it is reported instead. The fingerprint changes when a file is
    added, removed, resized or modified, for a folder and for an explicit list of files alike.
    """
    if dataset.files is not None:
        names, dropped = drop_duplicates([name for name, _ in _explicit_files(dataset)])
        if dropped:
            log.warning(
                "files= lists %d file(s) more than once; each is scored once, at its first place: %s",
                len(dropped),
                ", ".join(dropped[:20]) + (" ..." if len(dropped) > 20 else ""),
            )
        files: list[tuple[str, int | None]] = [(name, None) for name in names]
        return files, [], _fingerprint(_explicit_versions(files)), dropped
    assert dataset.path is not None
    loc = Location(dataset.path)
    # Not fs.exists: fsspec's generic exists() answers False for any error, a timeout included.
    info = _with_retries(f"input path {dataset.path!r}", _info_or_none, loc.fs, loc.path)
    if info is None:
        raise InputError(
            f"input path {dataset.path!r} does not exist; check the path (after templating) or create it"
        )
    if info.get("type") == "file":
        return (
            [(loc.url_of(loc.path), info.get("size"))],
            [],
            _fingerprint([f"{loc.path} {_version(info)}"]),
            [],
        )
    pattern = loc.join(str(dataset.pattern))
    found = _with_retries(f"listing {dataset.path!r}", loc.fs.glob, pattern, detail=True)
    fingerprint = _fingerprint([f"{p} {_version(info)}" for p, info in sorted(found.items())])
    if not loc.is_local:
        files = [(loc.url_of(p), info.get("size")) for p, info in found.items() if info.get("type") == "file"]
        return sorted(files), [], fingerprint, []
    # fsspec lists a symlink as type "other": follow it only to a file inside the input folder.
    root = os.path.realpath(loc.path)
    kept: list[tuple[str, int | None]] = []
    refused: list[dict[str, str]] = []
    for path, info in sorted(found.items()):
        if not info.get("islink"):
            if info.get("type") == "file":
                kept.append((path, info.get("size")))
            continue
        real = os.path.realpath(path)
        if not (real.startswith(root.rstrip("/") + "/") and os.path.isfile(real)):
            refused.append({"input": path, "reason": f"a symlink to {real}, outside the input folder {root}"})
        else:
            kept.append((path, os.path.getsize(real)))
    return kept, refused, fingerprint, []


def _explicit_versions(files: list[tuple[str, int | None]]) -> list[str]:
    """Return ``"<url> <size>:<mtime>"`` of each listed file, listing each remote folder once.

    A file that cannot be found gets no version (``"<url> missing"``): reading it fails in its
    mini-batch, where it is counted, as before.
    """
    stamps: dict[str, str] = {}
    remote: dict[str, list[str]] = {}
    for url, _ in files:
        if "://" not in url or url.startswith("file://"):
            path = url.removeprefix("file://")
            stat = os.stat(path) if os.path.exists(path) else None
            stamps[url] = f"{url} {stat.st_size}:{stat.st_mtime}" if stat else f"{url} missing"
        else:
            remote.setdefault(url.rsplit("/", 1)[0], []).append(url)
    for folder, urls in remote.items():
        fs, folder_path = url_to_fs(folder)
        try:
            listed = _with_retries(f"listing {folder!r}", fs.ls, folder_path, detail=True)
        except FileNotFoundError:
            listed = []
        by_name = {str(info["name"]).rstrip("/").rsplit("/", 1)[-1]: info for info in listed}
        for url in urls:
            info = by_name.get(url.rsplit("/", 1)[1])
            stamps[url] = f"{url} {_version(info)}" if info is not None else f"{url} missing"
    return [stamps[url] for url, _ in files]


def _info_or_none(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        return dict(fs.info(path))
    except FileNotFoundError:
        return None


def _with_retries(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` retrying transient storage errors; one that persists fails the partition step."""
    try:
        return call_with_retries(fn, *args, **kwargs)
    except StorageError as exc:
        # The retries gave up: say which input, and keep the storage's own error as the cause.
        cause = exc.__cause__ or exc
        raise StorageError(
            f"{what}: the storage kept failing after retries: {type(cause).__name__}: {cause}; "
            "check the storage and its connection, then clear the partition task"
        ) from cause


def drop_duplicates(names: list[str]) -> tuple[list[str], list[str]]:
    """Return the names without repeats, first occurrences in order, and the repeats dropped.

    >>> drop_duplicates(["a", "b", "a", "c", "b", "a"])
    (['a', 'b', 'c'], ['a', 'b', 'a'])
    """
    seen: set[str] = set()
    kept: list[str] = []
    dropped: list[str] = []
    for name in names:
        (dropped if name in seen else kept).append(name)
        seen.add(name)
    return kept, dropped


def _explicit_files(dataset: Dataset) -> list[tuple[str, int | None]]:
    files = dataset.files
    if isinstance(files, str) or not isinstance(files, Sequence):
        raise InputError(f"files={files!r} must be a list of file paths or URLs, e.g. files=['/data/a.png']")
    chosen: list[tuple[str, int | None]] = []
    root = dataset.path
    for entry in files:
        name = check_path("files", str(entry))
        if root is not None:
            absolute = "://" in name or name.startswith("/")
            name = name if absolute else root.rstrip("/") + "/" + name
            if not is_within(name, root):
                raise InputError(
                    f"files entry {entry!r} is outside the input folder {root!r}; list only files inside "
                    "it (relative to it, or absolute in the same form), or drop path= to take any file"
                )
            if (real := local_escape(name, root)) is not None:
                raise InputError(
                    f"files entry {entry!r} is a symlink (or under one) leading to {real!r}, outside the "
                    f"input folder {root!r}; a symlink may only lead to a file inside the folder: replace "
                    "the link by the file, or drop path= to take any file"
                )
        chosen.append((name, None))
    return chosen


def partition_files(files: list[tuple[str, int | None]], size: MiniBatchSize) -> list[MiniBatch]:
    """Group files into mini-batches of ``size.value`` files, in listing order.

    >>> [mb.files for mb in partition_files([("a", 1), ("b", 1), ("c", 1)], MiniBatchSize("files", 2))]
    [('a', 'b'), ('c',)]
    >>> partition_files([], MiniBatchSize("files", 10))
    []
    """
    count = size.value
    if size.unit != "files" or count < 1:
        raise ValueError(f"a FileDataset needs a positive count of files per mini-batch, got {size}")
    batches = []
    for index, start in enumerate(range(0, len(files), count)):
        chunk = files[start : start + count]
        batches.append(
            MiniBatch(
                index=index,
                kind="files",
                files=tuple(url for url, _ in chunk),
                sizes=tuple(s if s is not None else -1 for _, s in chunk),
                items=len(chunk),
            )
        )
    return batches


def _text_byte_ranges(file_size: int, size: int) -> list[tuple[int, int]]:
    """Cut ``[0, file_size)`` into ranges of ``size`` bytes; an empty file still gets one range.

    >>> _text_byte_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    >>> _text_byte_ranges(0, 4)
    [(0, 0)]
    """
    if file_size <= 0:
        return [(0, 0)]
    return [(start, min(start + size, file_size)) for start in range(0, file_size, size)]


def _text_row_ranges(url: str, fmt: str, rows: int) -> tuple[list[tuple[int, int, int]], int]:
    """Scan a text table once and cut it every ``rows`` data lines: ``[(start, end, n)]``."""
    ranges: list[tuple[int, int, int]] = []
    with open_url(url) as f:
        offset = 0
        if fmt in ("csv", "tsv"):
            offset = len(f.readline())
        start, in_range, tail_open = offset, 0, False
        while block := f.read(_SCAN_BLOCK):
            pos = 0
            while (nl := block.find(b"\n", pos)) != -1:
                in_range += 1
                pos = nl + 1
                if in_range == rows:
                    end = offset + pos
                    ranges.append((start, end, in_range))
                    start, in_range = end, 0
            tail_open = pos < len(block)
            offset += len(block)
        if tail_open:
            in_range += 1  # a last line without a line break
        if in_range or not ranges:
            ranges.append((start, offset, in_range))
    return ranges, offset


def _parquet_pieces(url: str, size: MiniBatchSize) -> list[tuple[TabularPiece, int]]:
    import pyarrow.parquet as pq

    with open_url(url) as f:
        meta = pq.ParquetFile(f).metadata
    groups = [
        (meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)
    ]
    pieces: list[tuple[TabularPiece, int]] = []
    if size.unit == "rows":
        total = sum(n for n, _ in groups)
        for start in range(0, total, size.value):
            end = min(start + size.value, total)
            pieces.append((TabularPiece(url, "parquet", "rows", start, end), end - start))
    else:
        first, rows, nbytes = 0, 0, 0
        for i, (n, b) in enumerate(groups):
            if i > first and nbytes + b > size.value:
                pieces.append((TabularPiece(url, "parquet", "row_groups", first, i), rows))
                first, rows, nbytes = i, 0, 0
            rows += n
            nbytes += b
        if groups:
            pieces.append((TabularPiece(url, "parquet", "row_groups", first, len(groups)), rows))
    return pieces or [(TabularPiece(url, "parquet", "rows", 0, 0), 0)]


def partition_table(files: list[tuple[str, int | None]], fmt: str, size: MiniBatchSize) -> list[MiniBatch]:
    """Split each table file into pieces of about ``size``; a piece never crosses a file boundary.

    A file whose layout cannot be read (a truncated parquet footer, a file gone since listing)
    becomes one whole-file mini-batch, so that reading it fails and is counted there. A storage
    error that persists through the retries raises ``StorageError`` instead: that is no fault
    of the file's.
    """
    if size.unit not in ("bytes", "rows") or size.value < 1:
        raise ValueError(f"a TabularDataset needs a positive byte or row size per mini-batch, got {size}")
    pieces: list[tuple[TabularPiece, int | None]] = []
    for url, file_size in files:
        named = _PIECE.match(url)
        if named is not None:
            # A piece named as the report and the dead letters name it: re-run exactly that piece.
            path, unit, start, end = named.groups()
            piece = TabularPiece(path, fmt, unit, int(start), int(end))  # type: ignore[arg-type]
            pieces.append((piece, end_minus_start(piece)))
            continue
        try:
            if fmt == "parquet":
                pieces.extend(_with_retries(url, _parquet_pieces, url, size))
            elif size.unit == "rows":
                ranges, _ = _with_retries(url, _text_row_ranges, url, fmt, size.value)
                pieces.extend((TabularPiece(url, fmt, "bytes", s, e), n) for s, e, n in ranges)
            else:
                if file_size is None:
                    fs, path = url_to_fs(url)
                    file_size = int(_with_retries(url, fs.size, path))
                pieces.extend(
                    (TabularPiece(url, fmt, "bytes", s, e), None)
                    for s, e in _text_byte_ranges(file_size, size.value)
                )
        except StorageError:
            raise
        except Exception as exc:
            log.warning(
                "cannot read the layout of %s (%s: %s); it becomes one whole-file mini-batch, where "
                "reading it fails and is counted",
                url,
                type(exc).__name__,
                exc,
            )
            pieces.append((TabularPiece(url, fmt, "file"), None))
    return [
        MiniBatch(index=i, kind="tabular", piece=piece, items=items)
        for i, (piece, items) in enumerate(pieces)
    ]


def partition_dataset(dataset: Dataset, size: MiniBatchSize) -> tuple[list[MiniBatch], dict[str, Any]]:
    """List the input and split it; return the mini-batches and facts for the manifest header."""
    files, refused, fingerprint, duplicates = list_input_files(dataset)
    if isinstance(dataset, TabularDataset):
        batches = partition_table(files, dataset.format, size)
    else:
        assert isinstance(dataset, FileDataset)
        batches = partition_files(files, size)
    if not files:
        log.warning("input %s: %s", dataset.path if dataset.path is not None else "files=[]", NO_FILES_NOTE)
    header = {
        "kind": "tabular" if dataset.tabular else "files",
        "format": getattr(dataset, "format", None),
        "input": dataset.path if dataset.path is not None else f"{len(files)} listed files",
        "input_files": len(files),
        "refused_inputs": refused,
        "duplicate_inputs_dropped": duplicates,
        "fingerprint": fingerprint,
        "mini_batch_size": {"unit": size.unit, "value": size.value},
        "note": "" if files else NO_FILES_NOTE,
    }
    return batches, header
