"""On an object store the parquet footers of a listed input are read together, not file by file.

``core/inputs/parquet_footers.py`` asks for the last bytes of every listed file in one batch of
ranged reads; the split reads each file's row groups from them, without opening the file. A
footer longer than the bytes read, or a file that is no parquet, is opened and read as before,
so it splits the same, or becomes one whole-file mini-batch the same.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_parallelrun.core.inputs import splitting
from airflow_parallelrun.core.inputs.parquet_footers import TAIL_BYTES, footer_tails
from airflow_parallelrun.core.sizes import MiniBatchSize
from airflow_parallelrun.core.storage.location import clear_storage_options, set_storage_options
from tests.object_stores import ObjectStore

pytestmark = pytest.mark.slow


def parquet_bytes(rows: int, columns: int = 1, row_group_size: int = 10) -> bytes:
    buffer = io.BytesIO()
    table = pa.table({f"c{c:04d}": list(range(rows)) for c in range(columns)})
    pq.write_table(table, buffer, row_group_size=row_group_size)
    return buffer.getvalue()


@pytest.fixture
def registered(object_store: ObjectStore) -> Iterator[ObjectStore]:
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    set_storage_options(
        object_store.url(), ParallelRunStorageHook(object_store.conn_id).filesystem(object_store.url())
    )
    yield object_store
    clear_storage_options()


def test_the_footers_are_read_together_and_no_file_is_opened(
    registered: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [(registered.put(f"in/t{i}.parquet", data := parquet_bytes(30 + i)), len(data)) for i in range(5)]
    opened: list[str] = []
    real_open = splitting.open_url

    def open_url(url: str, *args: str) -> object:
        opened.append(url)
        return real_open(url, *args)

    monkeypatch.setattr(splitting, "open_url", open_url)

    batches = splitting.partition_table(files, "parquet", MiniBatchSize("rows", 25))

    assert not opened, f"opened to read their footers: {opened}"
    assert all(tail is not None and tail.endswith(b"PAR1") for tail in footer_tails(files))
    pieces = [(mb.piece.path, mb.piece.start, mb.piece.end) for mb in batches]
    expected = [
        (url, s, min(s + 25, 30 + i)) for i, (url, _) in enumerate(files) for s in range(0, 30 + i, 25)
    ]
    assert pieces == expected
    assert [mb.items for mb in batches] == [e - s for _, s, e in expected]


def test_a_footer_longer_than_the_bytes_read_or_a_broken_file_is_read_as_before(
    registered: ObjectStore,
) -> None:
    wide = parquet_bytes(20, columns=600, row_group_size=10)
    assert pq.ParquetFile(io.BytesIO(wide)).metadata.serialized_size > TAIL_BYTES  # the footer does not fit
    files = [
        (registered.put("in/wide.parquet", wide), len(wide)),
        (registered.put("in/broken.parquet", b"not parquet at all"), 18),
        (registered.put("in/small.parquet", small := parquet_bytes(10)), len(small)),
    ]

    batches = splitting.partition_table(files, "parquet", MiniBatchSize("bytes", 1))

    pieces = [
        (mb.piece.path.rsplit("/", 1)[1], mb.piece.unit, mb.piece.start, mb.piece.end) for mb in batches
    ]
    assert pieces == [
        ("wide.parquet", "row_groups", 0, 1),
        ("wide.parquet", "row_groups", 1, 2),
        ("broken.parquet", "file", 0, 0),
        ("small.parquet", "row_groups", 0, 1),
    ]
    assert [mb.items for mb in batches] == [10, 10, None, 10]
