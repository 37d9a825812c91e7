"""ParallelRunStorageHook: an Airflow Connection as the filesystem of a run's input and output.

Where a provider registers a filesystem for the URL's scheme (the Amazon provider for ``s3://``,
Microsoft Azure's for ``abfs://``, Google's for ``gs://``), the filesystem is the one Airflow's
object-storage layer builds (what ``ObjectStoragePath(url, conn_id=...)`` uses): the provider reads
its own Connection type as its documentation says (an ``aws`` Connection's ``endpoint_url``,
``region_name``, role assumption; a ``wasb`` Connection's account, key, SAS token or connection
string). For other schemes, or a Connection whose extra holds ``storage_options``, the Connection
is turned into fsspec options by ``connection_storage_options``.

The filesystem and its credentials stay in the memory of the process that built them: they never
go to XCom, to the run's storage, to its reports or to a log.
"""

from __future__ import annotations

import logging
from typing import Any

import fsspec
from airflow.sdk import BaseHook
from fsspec import AbstractFileSystem


def _airflow_filesystems() -> tuple[Any, Any]:
    """Return Airflow's ``(has_fs, get_fs)``: ``airflow.sdk.io`` (3.1 and later)."""
    from airflow.sdk.io import get_fs, has_fs

    return has_fs, get_fs


def protocol_of(url: str) -> str:
    """Return the fsspec protocol of ``url`` (``file`` for a local path).

    >>> protocol_of("s3://bucket/in"), protocol_of("/data/in"), protocol_of("abfs://c/in")
    ('s3', 'file', 'abfs')
    """
    protocol, _ = fsspec.core.split_protocol(str(url))
    return protocol or "file"


def connection_storage_options(conn: Any) -> dict[str, Any]:
    """Turn a fetched Connection into fsspec storage options.

    The Connection's extra ``storage_options`` (a JSON object) goes to fsspec as it is; its login
    and password fill ``key`` and ``secret`` (s3fs's names) unless the extra names other
    options in ``login_option`` and ``password_option``.
    """
    extra = conn.extra_dejson
    options = dict(extra.get("storage_options") or {})
    if conn.login:
        options.setdefault(extra.get("login_option", "key"), conn.login)
    if conn.password:
        options.setdefault(extra.get("password_option", "secret"), conn.password)
    return options


#: azure-core logs every request's and response's headers at INFO (redacted, but hundreds of lines
#: per task): the package keeps this logger at WARNING unless the deployment set a level for it.
AZURE_REQUEST_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
_AZURE_PROTOCOLS = frozenset({"abfs", "abfss", "az", "adl"})


def quiet_azure_request_logs() -> None:
    """Keep azure-core's per-request header logs out of task logs, unless a level was set for them."""
    logger = logging.getLogger(AZURE_REQUEST_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def connection_filesystem(url: str, conn: Any) -> AbstractFileSystem:
    """Return the filesystem for ``url`` built from the fetched Connection ``conn``.

    The provider's filesystem for the URL's scheme where one is registered, unless the Connection's
    extra spells ``storage_options`` itself; else fsspec's with ``connection_storage_options``.
    """
    protocol = protocol_of(url)
    if protocol in _AZURE_PROTOCOLS:
        quiet_azure_request_logs()
    has_fs, get_fs = _airflow_filesystems()
    if protocol != "file" and "storage_options" not in conn.extra_dejson and has_fs(protocol):
        return get_fs(protocol, conn.conn_id, _provider_gaps(protocol, conn))
    return fsspec.filesystem(protocol, **connection_storage_options(conn))


def _provider_gaps(protocol: str, conn: Any) -> dict[str, Any]:
    """Return the options a provider's filesystem leaves out of a Connection its own hooks read.

    A ``wasb`` Connection names the storage account in its login (``WasbHook`` reads it so), but the
    Azure provider's ``abfs`` filesystem passes only the account URL and key on, and adlfs then
    refuses the key without an account name: the login is passed as ``account_name``.
    """
    extra = conn.extra_dejson
    named = "account_name" in extra or extra.get("connection_string")
    if protocol in ("abfs", "abfss") and conn.login and not named:
        return {"account_name": conn.login}
    return {}


class ParallelRunStorageHook(BaseHook):
    """Read an Airflow Connection as the filesystem of a folder or a file URL.

    Any Connection type will do: ``aws`` and ``wasb`` (or any type whose provider registers a
    filesystem for the URL's scheme) as their providers document them; others through their login,
    password and extra, as ``connection_storage_options`` says.
    """

    conn_name_attr = "conn_id"
    hook_name = "Parallel Run storage"

    def __init__(self, conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def get_conn(self) -> dict[str, Any]:
        """Return the storage options (what fsspec takes in place of a client)."""
        return self.storage_options()

    def storage_options(self) -> dict[str, Any]:
        """Return the Connection's fsspec storage options, fetched in this process."""
        return connection_storage_options(self.get_connection(self.conn_id))

    def filesystem(self, url: str) -> AbstractFileSystem:
        """Return the filesystem of ``url`` with this Connection's credentials (``connection_filesystem``)."""
        return connection_filesystem(url, self.get_connection(self.conn_id))

    async def afilesystem(self, url: str) -> AbstractFileSystem:
        """Return ``filesystem(url)`` in a trigger: built in a thread (providers build clients blocking)."""
        import asyncio

        conn = await BaseHook.aget_connection(self.conn_id)
        return await asyncio.to_thread(connection_filesystem, url, conn)


def input_root(path: str | None, files: Any) -> str:
    """Return the URL prefix the input's credentials apply to: its folder, or its files' protocol."""
    if path:
        return str(path)
    first = next(iter(files or []), "")
    return str(first).split("://", 1)[0] + "://" if "://" in str(first) else "/"


def use_connections(
    root: str | None, input_conn_id: str | None, output_path: str | None, output_conn_id: str | None
) -> None:
    """Register the Connections' filesystems for the input and output of this task's run."""
    from airflow_parallelrun.core.storage.location import set_storage_options

    if input_conn_id and root:
        set_storage_options(root, ParallelRunStorageHook(input_conn_id).filesystem(root))
    if output_conn_id and output_path:
        set_storage_options(output_path, ParallelRunStorageHook(output_conn_id).filesystem(output_path))
