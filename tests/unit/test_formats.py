"""A table format is one entry of one registry (core/inputs/formats.py).

Listing, splitting, reading and counting all consult it, so a delimited text format added
there alone is split, read and counted like csv.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_parallelrun.core.inputs import formats
from airflow_parallelrun.core.inputs.datasets import TabularDataset
from airflow_parallelrun.core.inputs.formats import FORMATS, TableFormat, table_format
from airflow_parallelrun.core.inputs.reading import count_piece_items, read_table_rows
from airflow_parallelrun.core.inputs.splitting import partition_dataset
from airflow_parallelrun.core.sizes import MiniBatchSize


def test_a_format_added_to_the_registry_alone_is_listed_split_read_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(FORMATS, "psv", TableFormat("psv", "lines", header=True, separator="|"))
    (tmp_path / "a.psv").write_text("x|y\n" + "".join(f"{i}|{i * 10}\n" for i in range(5)))
    (tmp_path / "ignored.csv").write_text("x,y\n1,2\n")

    dataset = TabularDataset(path=str(tmp_path), format="psv")
    batches, header = partition_dataset(dataset, MiniBatchSize("rows", 2))

    assert header["input_files"] == 1 and header["format"] == "psv"
    assert [mb.items for mb in batches] == [2, 2, 1]
    frames = [read_table_rows(mb.piece).frame for mb in batches if mb.piece is not None]
    assert [list(f.columns) for f in frames] == [["x", "y"]] * 3
    assert [v for f in frames for v in f["y"]] == [0, 10, 20, 30, 40]
    by_bytes, _ = partition_dataset(dataset, MiniBatchSize("bytes", 1 << 20))
    assert [count_piece_items(mb) for mb in by_bytes] == [5]


def test_every_supported_format_is_in_the_registry_and_an_unknown_one_is_named() -> None:
    assert set(FORMATS) == {"csv", "tsv", "jsonl", "parquet"}
    assert [f.name for f in FORMATS.values() if not f.lines] == ["parquet"]
    assert table_format("jsonl").separator is None and not table_format("jsonl").header
    with pytest.raises(ValueError, match=r"'orc'.*csv, tsv, parquet, jsonl"):
        formats.table_format("orc")
