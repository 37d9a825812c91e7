"""Create a file only if its name is free, in one step the store itself decides: the claim's primitive.

Two runs racing for a file each try to create its claim; the store must let exactly one succeed.
Only stores that document such a create are used, each with its own primitive:

- local disk, or a POSIX volume every worker mounts (NFS included): a hard link of a fully written
  temporary file, which fails when the name exists (:func:`write_local_file`);
- ``memory://`` (tests, one process): a check and a put under a lock;
- S3, and S3-compatible stores that implement conditional writes: ``PutObject`` with
  ``If-None-Match: *`` (AWS documents it as atomic since August 2024). ``412 PreconditionFailed``
  means the name is taken; ``409 ConditionalRequestConflict`` means a write of the same name is in
  progress and asks for another try. s3fs's own ``open(path, "xb")`` and ``touch`` send an empty
  object without the condition, so the request is made here, through the filesystem's client;
- Azure Blob Storage (adlfs): Put Blob with ``If-None-Match: *`` (the blob client's upload with
  ``overwrite=False``). ``409 BlobAlreadyExists`` means taken; another 409 is a conflict to retry.

Any other filesystem is refused by name (:func:`check_exclusive_create`). The store is told by
the filesystem's class, never by the URL's text; s3fs and adlfs are looked up among the modules
already imported, so this module needs neither. An S3-compatible server may ignore the condition
and overwrite: before its first claim, a process checks once per server and bucket that a second
create of the same name is refused (:func:`check_conditional_writes`).
"""

from __future__ import annotations

import sys
import threading
import uuid
from contextlib import suppress
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from airflow_parallelrun.core.errors import ConfigError, StorageConflict
from airflow_parallelrun.core.storage.atomic import write_local_file

#: Where a claim can be created exclusively, as the refusal names them.
SUPPORTED = (
    "a local or shared POSIX folder (an NFS volume every worker and the triggerer mount), "
    "S3 or an S3-compatible store with conditional writes (If-None-Match: *), or Azure Blob Storage "
    "(abfs://)"
)
# A MemoryFileSystem lives in one process: a lock makes its check-then-create one step.
_MEMORY_LOCK = threading.Lock()
# The (endpoint, bucket) pairs of S3 servers seen refusing a second create, in this process.
_CONDITIONAL_WRITES: set[tuple[str, str]] = set()


def _instance_of(fs: Any, module: str, name: str) -> bool:
    """Tell whether ``fs`` is an instance of ``module.name``, without importing ``module``."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(cls, type) and isinstance(fs, cls)


def store_kind(fs: Any) -> str | None:
    """Return which exclusive create ``fs`` gets: ``local``, ``memory``, ``s3``, ``azure``; None if none.

    >>> store_kind(LocalFileSystem()), store_kind(MemoryFileSystem())
    ('local', 'memory')
    """
    if isinstance(fs, LocalFileSystem):
        return "local"
    if isinstance(fs, MemoryFileSystem):
        return "memory"
    if _instance_of(fs, "s3fs", "S3FileSystem"):
        return "s3"
    if _instance_of(fs, "adlfs", "AzureBlobFileSystem"):
        return "azure"
    return None


def check_exclusive_create(fs: Any, state_path: str) -> None:
    """Refuse ``state_path`` on ``fs`` unless the store documents an exclusive create of a file."""
    if store_kind(fs) is not None:
        return
    cls = type(fs)
    raise ConfigError(
        f"state_path={state_path!r} is on {cls.__module__}.{cls.__name__} (protocol {fs.protocol!r}), "
        "which documents no atomic create-if-absent, so two runs could take the same file; the claim "
        f"ledger can live on {SUPPORTED}: put state_path on one of those (memory:// in tests)"
    )


def check_conditional_writes(fs: Any, folder: str) -> None:
    """Refuse an S3 server that ignores ``If-None-Match: *`` (it would let two runs take a file).

    Creates a probe object under ``folder`` twice and removes it: the second create must be refused.
    Done once per process for each endpoint and bucket; other stores need no check.
    """
    if store_kind(fs) != "s3":
        return
    endpoint = str(getattr(fs, "endpoint_url", None) or fs.client_kwargs.get("endpoint_url") or "AWS")
    seen = (endpoint, fs.split_path(folder)[0])
    if seen in _CONDITIONAL_WRITES:
        return
    probe = f"{folder.rstrip('/')}/.conditional-write-check-{uuid.uuid4().hex}"
    try:
        create_exclusive(fs, probe, b"first")
        ignored = create_exclusive(fs, probe, b"second")
    finally:
        with suppress(FileNotFoundError):
            fs.rm_file(probe)
    if ignored:
        raise ConfigError(
            f"the S3 server at {endpoint} (bucket {seen[1]!r}) overwrote an object on a PutObject with "
            "If-None-Match: *, so it does not implement conditional writes and two runs could take the "
            f"same file; put state_path on a store that does: {SUPPORTED}"
        )
    _CONDITIONAL_WRITES.add(seen)


def create_exclusive(fs: Any, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; tell whether this call created it.

    Raise ``StorageConflict`` when the store asks for another try (a 409 conflict); the caller
    retries it with the transient errors. A reader never sees a part of ``data``.
    """
    kind = store_kind(fs)
    if kind == "local":
        return write_local_file(path, data, exclusive=True)
    if kind == "memory":
        with _MEMORY_LOCK:
            if fs.exists(path):
                return False
            fs.pipe_file(path, data)
            return True
    if kind == "s3":
        return _create_on_s3(fs, path, data)
    if kind == "azure":
        return _create_on_azure(fs, path, data)
    check_exclusive_create(fs, path)
    raise AssertionError("unreachable")


def _s3_error(exc: BaseException) -> tuple[str | None, int | None]:
    """Return the S3 error code and HTTP status of botocore's error in ``exc``'s causes."""
    current: BaseException | None = exc
    while current is not None:
        response = getattr(current, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return response["Error"].get("Code"), status if isinstance(status, int) else None
        current = current.__cause__
    return None, None


def _create_on_s3(fs: Any, path: str, data: bytes) -> bool:
    bucket, key, _ = fs.split_path(path)
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except Exception as exc:
        code, status = _s3_error(exc)
        if code == "PreconditionFailed" or status == 412:
            return False
        if code == "ConditionalRequestConflict" or status == 409:
            raise StorageConflict(
                f"S3 answered {status} {code} to the conditional create of {path!r}: "
                "a write of the same name is in progress"
            ) from exc
        raise
    finally:
        fs.invalidate_cache(path)
    return True


def _create_on_azure(fs: Any, path: str, data: bytes) -> bool:
    from azure.core.exceptions import HttpResponseError, ResourceExistsError
    from fsspec.asyn import sync

    container, blob, _ = fs.split_path(path)

    async def upload() -> None:
        # overwrite=False sends If-None-Match: * (azure-storage-blob's upload helpers).
        async with fs.service_client.get_blob_client(container=container, blob=blob) as client:
            await client.upload_blob(data, overwrite=False, metadata={"is_directory": "false"})

    try:
        sync(fs.loop, upload)
    except HttpResponseError as exc:
        code = getattr(exc, "error_code", None)  # set by azure-storage-blob's error handling
        code = getattr(code, "value", code)
        if isinstance(exc, ResourceExistsError) and code == "BlobAlreadyExists":
            return False
        if exc.status_code == 409:
            raise StorageConflict(
                f"Azure Blob answered 409 {code} to the conditional create of {path!r}: "
                "a conflicting operation on that name is in progress"
            ) from exc
        raise
    finally:
        fs.invalidate_cache(fs._parent(path))
    return True
