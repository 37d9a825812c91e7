"""List an input: a folder (one listing call) or an explicit list of files, sorted and fingerprinted.

Symlinks that lead out of the input folder are refused and reported, not read; a file listed
twice in ``files=`` is scored once, at its first place. The fingerprint changes when a file is
added, removed, resized or modified, so a resumed run can tell that its input changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from airflow_parallelrun.core.errors import InputError, StorageError
from airflow_parallelrun.core.inputs.datasets import Dataset
from airflow_parallelrun.core.inputs.paths import check_path, is_within, local_escape
from airflow_parallelrun.core.storage.location import Location, call_with_retries, url_to_fs

log = logging.getLogger(__name__)
T = TypeVar("T")

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
        return _list_explicit(dataset)
    assert dataset.path is not None
    loc = Location(dataset.path)
    glob = loc.join(str(dataset.pattern))
    # An object store: the listing first. A folder it finds files in exists, and is no file: the
    # lookup of the path (a request, two for a folder on S3) is left for an empty listing.
    found = None if loc.is_local else _glob_ahead(loc, glob, dataset.path)
    if not found:
        # Not fs.exists: fsspec's generic exists() answers False for any error, a timeout included.
        info = with_retries(f"input path {dataset.path!r}", _info_or_none, loc.fs, loc.path)
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
        found = found if found is not None else _glob(loc, glob, dataset.path)
    fingerprint = _fingerprint([f"{p} {_version(info)}" for p, info in sorted(found.items())])
    if not loc.is_local:
        files = [(loc.url_of(p), info.get("size")) for p, info in found.items() if info.get("type") == "file"]
        return sorted(files), [], fingerprint, []
    kept, refused = _inside_the_folder(found, loc.path)
    return kept, refused, fingerprint, []


def _glob(loc: Location, pattern: str, path: str) -> dict[str, dict[str, Any]]:
    return dict(with_retries(f"listing {path!r}", loc.fs.glob, pattern, detail=True))


def _glob_ahead(loc: Location, pattern: str, path: str) -> dict[str, dict[str, Any]] | None:
    """List an object store's folder before looking it up; None when the listing cannot tell.

    A bucket that does not exist, or a file's path (adlfs's glob under a file raises), is then
    looked up first, as on local disk, and what the lookup says is said.
    """
    try:
        return _glob(loc, pattern, path)
    except StorageError:
        raise
    except Exception:
        return None


def _list_explicit(dataset: Dataset) -> Listed:
    """List the files of ``files=``, each once, fingerprinted by their size and modification time."""
    names, dropped = drop_duplicates([name for name, _ in _explicit_files(dataset)])
    if dropped:
        log.warning(
            "files= lists %d file(s) more than once; each is scored once, at its first place: %s",
            len(dropped),
            ", ".join(dropped[:20]) + (" ..." if len(dropped) > 20 else ""),
        )
    files: list[tuple[str, int | None]] = [(name, None) for name in names]
    return files, [], _fingerprint(_explicit_versions(files)), dropped


def _inside_the_folder(
    found: dict[str, dict[str, Any]], folder: str
) -> tuple[list[tuple[str, int | None]], list[dict[str, str]]]:
    """Keep the files of a local listing, following a symlink only to a file inside ``folder``."""
    # fsspec lists a symlink as type "other": follow it only to a file inside the input folder.
    root = os.path.realpath(folder)
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
    return kept, refused


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
            listed = with_retries(f"listing {folder!r}", fs.ls, folder_path, detail=True)
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


def with_retries(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
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
