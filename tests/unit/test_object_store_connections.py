"""Connections as Airflow users have them: an ``aws`` and a ``wasb`` Connection reach real servers."""

from __future__ import annotations

from airflow_parallelrun.core.storage.location import Location


def test_the_provider_filesystem_reaches_the_store_the_connection_names(object_store):
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    fs = ParallelRunStorageHook(object_store.conn_id).filesystem(object_store.url())
    # The provider's own filesystem class, built from the Connection's endpoint.
    assert type(fs).__name__ == {"s3": "S3FileSystem", "azure": "AzureBlobFileSystem"}[object_store.kind]
    fs.pipe_file(object_store.path("in/a.txt"), b"hello")
    loc = Location(object_store.url("in"), fs)
    assert loc.read_bytes(loc.join("a.txt")) == b"hello"
    assert loc.url_of(loc.join("a.txt")) == object_store.url("in/a.txt")
