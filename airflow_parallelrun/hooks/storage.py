"""ParallelRunStorageHook: an Airflow Connection as fsspec storage options, for a run's input and output.

The options stay in the memory of the process that fetched them: they never go to XCom, to the
run's storage, to its reports or to a log.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook


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


class ParallelRunStorageHook(BaseHook):
    """Read an Airflow Connection as the fsspec storage options of a folder or a file URL.

    Any Connection type will do (``aws``, ``generic``, ...): only its login, password and extra
    are read, as ``connection_storage_options`` says.
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

    async def astorage_options(self) -> dict[str, Any]:
        """Return the Connection's fsspec storage options without blocking the event loop (triggers)."""
        return connection_storage_options(await BaseHook.aget_connection(self.conn_id))


def storage_options_from_connection(conn_id: str) -> dict[str, Any]:
    """Return the fsspec storage options of the Connection ``conn_id`` (see ``ParallelRunStorageHook``)."""
    return ParallelRunStorageHook(conn_id).storage_options()


def input_root(path: str | None, files: Any) -> str:
    """Return the URL prefix the input's credentials apply to: its folder, or its files' protocol."""
    if path:
        return str(path)
    first = next(iter(files or []), "")
    return str(first).split("://", 1)[0] + ":/" if "://" in str(first) else "/"


def use_connections(
    root: str | None, input_conn_id: str | None, output_path: str | None, output_conn_id: str | None
) -> None:
    """Register the Connections' storage options for the input and output of this task's run."""
    from airflow_parallelrun.core.storage.location import set_storage_options

    if input_conn_id and root:
        set_storage_options(root, ParallelRunStorageHook(input_conn_id).storage_options())
    if output_conn_id and output_path:
        set_storage_options(output_path, ParallelRunStorageHook(output_conn_id).storage_options())
