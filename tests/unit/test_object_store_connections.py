"""Connections as Airflow users have them: ``aws`` and ``wasb`` Connections reach real servers.

The filesystem comes from Airflow's object-storage layer (the provider's filesystem for the URL's
scheme); the package's private ``storage_options`` form is the fallback for what no provider opens.
"""

from __future__ import annotations

import json

from airflow_parallelrun.core.storage.location import Location
from airflow_parallelrun.hooks.storage import ParallelRunStorageHook
from tests.servers import azurite


def test_the_provider_filesystem_reaches_the_store_the_connection_names(object_store):
    fs = ParallelRunStorageHook(object_store.conn_id).filesystem(object_store.url())
    # The provider's own filesystem class, built from the Connection's endpoint: on S3 the extra's
    # endpoint_url (without it s3fs would go to the public AWS address and fail here).
    assert type(fs).__name__ == {"s3": "S3FileSystem", "azure": "AzureBlobFileSystem"}[object_store.kind]
    fs.pipe_file(object_store.path("in/a.txt"), b"hello")
    loc = Location(object_store.url("in"), fs)
    assert loc.read_bytes(loc.join("a.txt")) == b"hello"
    assert loc.url_of(loc.join("a.txt")) == object_store.url("in/a.txt")


def test_the_endpoint_of_the_aws_connection_is_what_routes_the_requests(s3_store, monkeypatch):
    """The same keys without ``endpoint_url`` go to the public AWS address (unreachable here)."""
    fs = ParallelRunStorageHook(s3_store.conn_id).filesystem(s3_store.url())
    assert fs.s3.meta.endpoint_url == s3_store.endpoint()
    conn = s3_store.connection()
    conn["extra"].pop("endpoint_url")
    monkeypatch.setenv("AIRFLOW_CONN_NO_ENDPOINT", json.dumps(conn))
    fs = ParallelRunStorageHook("no_endpoint").filesystem(s3_store.url())
    assert fs.s3.meta.endpoint_url == "https://s3.amazonaws.com"


def test_a_wasb_connection_with_account_and_key_gives_adlfs_the_account_name(monkeypatch):
    """The login-and-key form: the Azure provider passes the key on but not the account name.

    adlfs builds ``https://<account>.blob.core.windows.net`` from the name and takes no endpoint
    URL, so this form cannot reach Azurite: the test checks the filesystem built, not a request.
    """
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZ_KEY",
        json.dumps({"conn_type": "wasb", "login": "scoringdata", "password": azurite.ACCOUNT_KEY}),
    )
    fs = ParallelRunStorageHook("az_key").filesystem("abfs://container/in")
    assert type(fs).__name__ == "AzureBlobFileSystem"
    assert fs.account_name == "scoringdata"
    assert fs.account_key == azurite.ACCOUNT_KEY
    assert fs.account_url == "https://scoringdata.blob.core.windows.net"


def test_the_private_storage_options_form_still_opens_a_store(s3_store, monkeypatch):
    """A Connection whose extra spells ``storage_options`` is opened by fsspec with them, as before."""
    from tests.servers import moto_s3

    object_store = s3_store
    options = {"client_kwargs": {"endpoint_url": object_store.endpoint(), "region_name": moto_s3.REGION}}
    monkeypatch.setenv(
        "AIRFLOW_CONN_PRIVATE_FORM",
        json.dumps(
            {
                "conn_type": "generic",
                "login": moto_s3.ACCESS_KEY,
                "password": moto_s3.SECRET_KEY,
                "extra": {"storage_options": options},
            }
        ),
    )
    object_store.put("in/b.txt", b"private")
    fs = ParallelRunStorageHook("private_form").filesystem(object_store.url())
    assert fs.key == moto_s3.ACCESS_KEY
    assert fs.cat_file(object_store.path("in/b.txt")) == b"private"


def test_a_scheme_no_provider_opens_takes_the_connection_as_fsspec_options(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PLAIN", json.dumps({"conn_type": "generic", "extra": {}}))
    fs = ParallelRunStorageHook("plain").filesystem("memory://parallelrun-conn-test/in")
    assert type(fs).__name__ == "MemoryFileSystem"
