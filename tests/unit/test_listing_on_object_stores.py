"""On S3 and Azure Blob an input folder is listed before it is looked up; every kind of path lists right.

``core/inputs/listing.py`` lists an object store's folder first (a folder the listing finds files
in needs no lookup besides). A file's path (adlfs's listing under it raises), a path or a bucket
that does not exist, and an empty folder are looked up as before, and said so.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_parallelrun.core.errors import InputError
from airflow_parallelrun.core.inputs.datasets import TabularDataset
from airflow_parallelrun.core.inputs.listing import list_input_files
from airflow_parallelrun.core.storage.location import clear_storage_options, set_storage_options
from tests.object_stores import ObjectStore

pytestmark = pytest.mark.slow


@pytest.fixture
def store(object_store: ObjectStore) -> Iterator[ObjectStore]:
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    scheme = object_store.url().split("://")[0] + "://"
    set_storage_options(scheme, ParallelRunStorageHook(object_store.conn_id).filesystem(object_store.url()))
    yield object_store
    clear_storage_options()


def listed(url: str) -> list[tuple[str, int | None]]:
    return list_input_files(TabularDataset(path=url, format="parquet"))[0]


def test_a_folder_a_file_and_paths_that_do_not_exist(store: ObjectStore) -> None:
    url = store.put("in/a.parquet", b"x")
    store.put("in/notes.txt", b"not matched")

    assert listed(store.url("in")) == [(url, 1)]
    assert listed(url) == [(url, 1)]
    assert listed(store.url("in") + "/") == [(url, 1)]
    for missing in (store.url("nope"), store.url("in").replace(store.bucket, f"{store.bucket}-none")):
        with pytest.raises(InputError, match="does not exist"):
            listed(missing)


def test_a_folder_with_no_matching_file_lists_nothing(store: ObjectStore) -> None:
    store.put("in/notes.txt", b"not matched")

    assert listed(store.url("in")) == []
