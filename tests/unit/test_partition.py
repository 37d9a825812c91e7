"""Tests for splitting an input into mini-batches (core/inputs/splitting.py) and storing them
(core/storage/manifest.py).

Every test works on real files in ``tmp_path`` and reads each mini-batch back the way a worker
does, so "every item exactly once, in order" is checked on the data, not on the arithmetic.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import InputError
from airflow_parallelrun.core.inputs.datasets import FileDataset, TabularDataset
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.inputs.reading import read_table_piece
from airflow_parallelrun.core.inputs.splitting import partition_dataset
from airflow_parallelrun.core.sizes import MiniBatchSize
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.steps import partition
from airflow_parallelrun.core.storage import manifest
from airflow_parallelrun.core.storage.manifest import (
    RunLayout,
    iter_mini_batches,
    read_manifest_header,
    read_mini_batch,
)


def files_of(size: int) -> MiniBatchSize:
    return MiniBatchSize("files", size)


def bytes_of(size: int) -> MiniBatchSize:
    return MiniBatchSize("bytes", size)


def rows_of(size: int) -> MiniBatchSize:
    return MiniBatchSize("rows", size)


def write(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """Return a table whose text lines vary a lot in length, with commas, quotes and non-ASCII text."""
    rng = random.Random(seed)
    alphabet = 'abcdefghijklmnopqrstuvwxyz ABCXYZ,é数"'
    return pd.DataFrame(
        {
            "id": range(rows),
            # "row " first: never empty, never parsed as a number or a date.
            "text": [
                "row " + "".join(rng.choices(alphabet, k=rng.choice([0, 1, 5, 30, 200]))) for _ in range(rows)
            ],
            "score": [i * 1.5 + 0.25 for i in range(rows)],
        }
    )


def write_text_table(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, index=False, sep="\t")
    else:
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def read_pieces(batches: list[MiniBatch]) -> list[pd.DataFrame]:
    frames = []
    for mb in batches:
        assert mb.kind == "tabular"
        assert mb.files == ()
        assert mb.piece is not None
        frames.append(read_table_piece(mb.piece))
    return frames


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    non_empty = [f for f in frames if len(f)]
    return pd.concat(non_empty, ignore_index=True)


def assert_indices(batches: list[MiniBatch]) -> None:
    assert [mb.index for mb in batches] == list(range(len(batches)))
    assert [mb.id for mb in batches] == [f"mb-{i:06d}" for i in range(len(batches))]


# --- FileDataset --------------------------------------------------------------------------------


@pytest.fixture
def image_tree(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder of .png files at several depths, plus files the pattern must not match."""
    root = tmp_path / "images"
    names = [
        "b.png",
        "a.png",
        "batch_2/c.png",
        "batch_1/z.png",
        "batch_1/deep/er/y.png",
        "batch_10/x.png",
        "batch_1/m.png",
        "Upper.png",
    ]
    pngs = [write(root / n, b"p" * (i + 1)) for i, n in enumerate(names)]
    write(root / "notes.txt", b"not an image")
    write(root / "batch_1" / "thumb.png.bak", b"backup")
    write(root / "batch_1" / "png", b"no extension")
    return root, sorted(str(p) for p in pngs)


def test_recursive_pattern_takes_only_matching_files_in_sorted_order(image_tree):
    root, expected = image_tree
    batches, header = partition_dataset(FileDataset(path=str(root), pattern="**/*.png"), files_of(3))
    listed = [f for mb in batches for f in mb.files]
    assert listed == expected
    assert len(set(listed)) == len(listed)
    assert [len(mb.files) for mb in batches] == [3, 3, 2]
    assert [mb.items for mb in batches] == [3, 3, 2]
    assert all(mb.kind == "files" and mb.piece is None for mb in batches)
    assert [s for mb in batches for s in mb.sizes] == [os.path.getsize(f) for f in expected]
    assert_indices(batches)
    assert header["kind"] == "files"
    assert header["input_files"] == len(expected)
    assert header["mini_batch_size"] == {"unit": "files", "value": 3}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 100])
def test_every_file_in_exactly_one_mini_batch_all_full_but_the_last(image_tree, size):
    root, expected = image_tree
    batches, _ = partition_dataset(FileDataset(path=str(root), pattern="**/*.png"), files_of(size))
    assert len(batches) == math.ceil(len(expected) / size)
    assert all(len(mb.files) == size for mb in batches[:-1])
    assert 1 <= len(batches[-1].files) <= size
    assert [f for mb in batches for f in mb.files] == expected
    assert_indices(batches)


def test_default_pattern_takes_every_file(image_tree):
    root, expected = image_tree
    batches, _ = partition_dataset(FileDataset(path=str(root)), files_of(100))
    listed = list(batches[0].files)
    assert set(expected) < set(listed)
    assert str(root / "notes.txt") in listed
    assert listed == sorted(listed)
    # Folders are not items.
    assert str(root / "batch_1") not in listed


def test_size_larger_than_the_input_gives_one_mini_batch(image_tree):
    root, expected = image_tree
    batches, _ = partition_dataset(FileDataset(path=str(root), pattern="**/*.png"), files_of(10_000))
    assert len(batches) == 1
    assert list(batches[0].files) == expected
    assert batches[0].items == len(expected)


def test_empty_folder_gives_no_mini_batches(tmp_path):
    (tmp_path / "empty").mkdir()
    batches, header = partition_dataset(FileDataset(path=str(tmp_path / "empty")), files_of(10))
    assert batches == []
    assert header["input_files"] == 0


def test_no_matching_file_gives_no_mini_batches(tmp_path):
    write(tmp_path / "in" / "a.txt")
    batches, _ = partition_dataset(FileDataset(path=str(tmp_path / "in"), pattern="**/*.png"), files_of(10))
    assert batches == []


def test_missing_input_path_names_the_path(tmp_path):
    missing = str(tmp_path / "no" / "such" / "folder")
    with pytest.raises(InputError) as info:
        partition_dataset(FileDataset(path=missing), files_of(10))
    assert repr(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_a_single_file_path_is_one_item(tmp_path):
    one = write(tmp_path / "one.png", b"12345")
    batches, _ = partition_dataset(FileDataset(path=str(one)), files_of(10))
    assert [mb.files for mb in batches] == [(str(one),)]
    assert batches[0].sizes == (5,)


def test_files_on_object_storage_are_listed_as_urls(tmp_path):
    root = f"parallelrun-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        for name in ("c.png", "sub/b.png", "a.png", "sub/a.txt"):
            fs.pipe_file(f"/{root}/in/{name}", b"png")
        batches, _ = partition_dataset(
            FileDataset(path=f"memory://{root}/in", pattern="**/*.png"), files_of(2)
        )
        assert [mb.files for mb in batches] == [
            (f"memory:///{root}/in/a.png", f"memory:///{root}/in/c.png"),
            (f"memory:///{root}/in/sub/b.png",),
        ]
        assert [mb.sizes for mb in batches] == [(3, 3), (3,)]
    finally:
        fs.rm(f"/{root}", recursive=True)


def test_explicit_files_keep_their_order_and_are_not_listed(tmp_path):
    files = [str(write(tmp_path / n)) for n in ("c.png", "a.png", "b.png", "d.png", "e.png")]
    batches, header = partition_dataset(FileDataset(files=files), files_of(2))
    assert [mb.files for mb in batches] == [tuple(files[0:2]), tuple(files[2:4]), tuple(files[4:])]
    assert [mb.items for mb in batches] == [2, 2, 1]
    # Sizes of an explicit list are unknown: nothing was listed.
    assert [mb.sizes for mb in batches] == [(-1, -1), (-1, -1), (-1,)]
    assert header["input"] == "5 listed files"
    assert header["input_files"] == 5


def test_explicit_files_must_be_a_list(tmp_path):
    with pytest.raises(InputError, match="must be a list of file paths"):
        partition_dataset(FileDataset(files="/data/a.png"), files_of(2))


# --- TabularDataset, text formats split by bytes ---------------------------------------------------

# Small byte sizes make one mini-batch per few bytes; a smaller table keeps them fast. Each table
# still has lines much longer than the size, so many ranges hold no line start at all.
BYTE_SIZES = [(1, 12), (7, 60), (100, 300), (4096, 5000), (10**9, 5000)]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize(("size", "rows"), BYTE_SIZES, ids=[str(s) for s, _ in BYTE_SIZES])
def test_text_split_by_bytes_reads_back_every_row_exactly_once(tmp_path, fmt, size, rows):
    df = make_table(rows, seed=size)
    path = write_text_table(df, tmp_path / f"table.{fmt}", fmt)
    file_size = path.stat().st_size
    batches, header = partition_dataset(TabularDataset(path=str(tmp_path), format=fmt), bytes_of(size))

    assert_indices(batches)
    pieces = [mb.piece for mb in batches]
    assert all(p.unit == "bytes" and p.path == str(path) and p.format == fmt for p in pieces)
    # The byte ranges tile the file: no gap, no overlap.
    assert pieces[0].start == 0
    assert pieces[-1].end == file_size
    assert all(a.end == b.start for a, b in itertools.pairwise(pieces))
    assert all(p.end - p.start <= size for p in pieces)
    assert len(batches) == math.ceil(file_size / size)
    assert header["kind"] == "tabular"
    assert header["format"] == fmt

    frames = read_pieces(batches)
    if fmt != "jsonl":
        # The header line is a header in every piece, never a row.
        assert all(list(f.columns) == list(df.columns) for f in frames)
    assert_frame_equal(concat(frames), df)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize("rows_per_batch", [13, 1000, 2500, 10**6])
def test_text_split_by_rows_gives_exactly_n_rows_per_piece(tmp_path, fmt, rows_per_batch):
    df = make_table(2500, seed=rows_per_batch)
    write_text_table(df, tmp_path / f"table.{fmt}", fmt)
    batches, _ = partition_dataset(TabularDataset(path=str(tmp_path), format=fmt), rows_of(rows_per_batch))

    assert len(batches) == math.ceil(2500 / rows_per_batch)
    frames = read_pieces(batches)
    lengths = [len(f) for f in frames]
    assert all(n == rows_per_batch for n in lengths[:-1])
    assert 1 <= lengths[-1] <= rows_per_batch
    assert [mb.items for mb in batches] == lengths
    assert_frame_equal(concat(frames), df)


@pytest.mark.parametrize(
    "size", [bytes_of(1), bytes_of(5), bytes_of(64), bytes_of(10**6), rows_of(3), rows_of(4)]
)
def test_csv_without_trailing_newline_keeps_its_last_row(tmp_path, size):
    text = "id,name\n1,ann\n2,bob\n3,cy\n40,dorothea\n5,e"
    write(tmp_path / "t.csv", text)
    batches, _ = partition_dataset(TabularDataset(path=str(tmp_path)), size)
    got = concat(read_pieces(batches))
    expected = pd.DataFrame({"id": [1, 2, 3, 40, 5], "name": ["ann", "bob", "cy", "dorothea", "e"]})
    assert_frame_equal(got, expected)
    if size.unit == "rows":
        assert [mb.items for mb in batches] == ([3, 2] if size.value == 3 else [4, 1])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_jsonl_and_csv_without_trailing_newline_split_by_rows(tmp_path, fmt):
    df = make_table(10)
    path = write_text_table(df, tmp_path / f"t.{fmt}", fmt)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    batches, _ = partition_dataset(TabularDataset(path=str(tmp_path), format=fmt), rows_of(4))
    assert [mb.items for mb in batches] == [4, 4, 2]
    assert_frame_equal(concat(read_pieces(batches)), df)


@pytest.mark.parametrize("size", [bytes_of(1), bytes_of(9), rows_of(7)])
def test_csv_with_windows_line_ends(tmp_path, size):
    df = make_table(12)
    df.to_csv(tmp_path / "t.csv", index=False, lineterminator="\r\n")
    batches, _ = partition_dataset(TabularDataset(path=str(tmp_path)), size)
    frames = read_pieces(batches)
    assert all(list(f.columns) == list(df.columns) for f in frames)
    assert_frame_equal(concat(frames), df)


@pytest.mark.parametrize("header", ["id,name\n", "id,name"])
@pytest.mark.parametrize("size", [bytes_of(1), bytes_of(3), bytes_of(10**6), rows_of(5)])
def test_header_only_csv_gives_empty_pieces_with_its_columns(tmp_path, header, size):
    write(tmp_path / "t.csv", header)
    batches, _ = partition_dataset(TabularDataset(path=str(tmp_path)), size)
    assert len(batches) >= 1
    frames = read_pieces(batches)
    assert all(len(f) == 0 for f in frames)
    assert all(list(f.columns) == ["id", "name"] for f in frames)
    if size.unit == "rows":
        assert [mb.items for mb in batches] == [0]


def test_several_text_files_never_share_a_mini_batch(tmp_path):
    tables = {name: make_table(n, seed=n) for name, n in [("a", 23), ("b", 10), ("c", 5)]}
    paths = {name: write_text_table(df, tmp_path / f"{name}.csv", "csv") for name, df in tables.items()}
    batches, header = partition_dataset(TabularDataset(path=str(tmp_path)), rows_of(10))
    assert header["input_files"] == 3
    assert [(os.path.basename(mb.piece.path), mb.items) for mb in batches] == [
        ("a.csv", 10),
        ("a.csv", 10),
        ("a.csv", 3),
        ("b.csv", 10),
        ("c.csv", 5),
    ]
    frames = read_pieces(batches)
    for name, df in tables.items():
        own = [f for mb, f in zip(batches, frames, strict=True) if mb.piece.path == str(paths[name])]
        assert_frame_equal(concat(own), df)

    by_bytes, _ = partition_dataset(TabularDataset(path=str(tmp_path)), bytes_of(500))
    for name, path in paths.items():
        own = [mb.piece for mb in by_bytes if mb.piece.path == str(path)]
        assert own[0].start == 0
        assert own[-1].end == path.stat().st_size
        assert_frame_equal(concat([read_table_piece(p) for p in own]), tables[name])


def test_tabular_pattern_defaults_to_the_format(tmp_path):
    write_text_table(make_table(3), tmp_path / "t.csv", "csv")
    write_text_table(make_table(3), tmp_path / "sub" / "u.csv", "csv")
    write(tmp_path / "readme.txt", "not a table")
    write_text_table(make_table(3), tmp_path / "t.jsonl", "jsonl")
    batches, _ = partition_dataset(TabularDataset(path=str(tmp_path)), bytes_of(10**6))
    assert [mb.piece.path for mb in batches] == [str(tmp_path / "sub" / "u.csv"), str(tmp_path / "t.csv")]


# --- TabularDataset, parquet ---------------------------------------------------------------------


def write_parquet(df: pd.DataFrame, path: Path, row_group_size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=row_group_size)
    return path


def group_bytes(path: Path) -> list[int]:
    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]


@pytest.mark.parametrize("groups_per_batch", [None, 1, 3, 4, 100])
def test_parquet_split_by_bytes_uses_whole_row_groups(tmp_path, groups_per_batch):
    df = make_table(1000)
    path = write_parquet(df, tmp_path / "t.parquet", row_group_size=100)
    sizes = group_bytes(path)
    assert len(sizes) == 10
    limit = 1 if groups_per_batch is None else max(sizes) * groups_per_batch
    batches, _ = partition_dataset(TabularDataset(path=str(tmp_path), format="parquet"), bytes_of(limit))

    pieces = [mb.piece for mb in batches]
    assert all(p.unit == "row_groups" for p in pieces)
    assert pieces[0].start == 0
    assert pieces[-1].end == 10
    assert all(a.end == b.start and a.start < a.end for a, b in itertools.pairwise(pieces))
    for p in pieces:
        # A piece stays within the size unless it is a single row group bigger than the size.
        assert sum(sizes[p.start : p.end]) <= limit or p.end - p.start == 1
    if groups_per_batch is None:
        assert len(batches) == 10
    if groups_per_batch == 100:
        assert len(batches) == 1
    frames = read_pieces(batches)
    assert [mb.items for mb in batches] == [len(f) for f in frames]
    assert [len(f) for f in frames] == [100 * (p.end - p.start) for p in pieces]
    assert_frame_equal(concat(frames), df)


@pytest.mark.parametrize("rows_per_batch", [7, 37, 64, 250, 999, 1000, 5000])
def test_parquet_split_by_rows_gives_exact_slices(tmp_path, rows_per_batch):
    df = make_table(1000)
    write_parquet(df, tmp_path / "t.parquet", row_group_size=64)
    batches, _ = partition_dataset(
        TabularDataset(path=str(tmp_path), format="parquet"), rows_of(rows_per_batch)
    )
    assert len(batches) == math.ceil(1000 / rows_per_batch)
    frames = read_pieces(batches)
    for mb, frame in zip(batches, frames, strict=True):
        p = mb.piece
        assert p.unit == "rows"
        assert p.end - p.start == mb.items == len(frame)
        assert_frame_equal(frame.reset_index(drop=True), df.iloc[p.start : p.end].reset_index(drop=True))
    assert all(mb.items == rows_per_batch for mb in batches[:-1])
    assert_frame_equal(concat(frames), df)


def test_several_parquet_files_never_share_a_mini_batch(tmp_path):
    a, b = make_table(150, seed=1), make_table(40, seed=2)
    write_parquet(a, tmp_path / "a.parquet", row_group_size=50)
    write_parquet(b, tmp_path / "b.parquet", row_group_size=50)
    batches, _ = partition_dataset(TabularDataset(path=str(tmp_path), format="parquet"), rows_of(100))
    assert [(os.path.basename(mb.piece.path), mb.items) for mb in batches] == [
        ("a.parquet", 100),
        ("a.parquet", 50),
        ("b.parquet", 40),
    ]
    frames = read_pieces(batches)
    assert_frame_equal(concat(frames[:2]), a)
    assert_frame_equal(concat(frames[2:]), b)


def test_truncated_parquet_becomes_one_whole_file_piece_that_fails_to_read(tmp_path):
    good = make_table(300, seed=1)
    write_parquet(good, tmp_path / "a_good.parquet", row_group_size=100)
    bad = write_parquet(make_table(300, seed=2), tmp_path / "b_bad.parquet", row_group_size=100)
    bad.write_bytes(bad.read_bytes()[:-40])

    for size in (bytes_of(1), rows_of(100)):
        batches, _ = partition_dataset(TabularDataset(path=str(tmp_path), format="parquet"), size)
        bad_batches = [mb for mb in batches if mb.piece.path == str(bad)]
        assert len(bad_batches) == 1
        piece = bad_batches[0].piece
        assert piece.unit == "file"
        assert bad_batches[0].items is None
        assert "whole file" in bad_batches[0].label
        assert_frame_equal(concat(read_pieces([mb for mb in batches if mb.piece.path != str(bad)])), good)
        with pytest.raises(InputError) as info:
            read_table_piece(piece)
        assert str(bad) in str(info.value)


# --- steps.partition and the manifest -----------------------------------------------------------


def spec_for(output: str, **config) -> RunSpec:
    config.setdefault("mini_batches_per_task", 1)  # a descriptor per mini-batch, unless a test asks
    config_ = ParallelRunConfig(entry_script="x.py", **config)
    return RunSpec(output_path=output, config=config_, entry_script="")


@pytest.mark.parametrize(
    ("setting", "processes", "tasks", "largest"),
    [("auto", 2, 8, 13), ("auto", 8, 32, 4), (1, 2, 100, 1), (3, 2, 34, 3)],
)
def test_engine_partition_packs_consecutive_mini_batches_as_mini_batches_per_task_says(
    tmp_path, setting, processes, tasks, largest
):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(100):
        (folder / f"{i:03d}.txt").write_text("x")
    spec = spec_for(
        str(tmp_path / "out"),
        mini_batch_size="1",
        mini_batches_per_task=setting,
        process_count_per_node=processes,
    )
    descriptors = partition(FileDataset(path=str(folder), pattern="*.txt"), spec)
    assert len(descriptors) == tasks
    assert max(d["count"] for d in descriptors) == largest
    # Every mini-batch in exactly one descriptor, in order.
    covered = [i for d in descriptors for i in range(d["index"], d["index"] + d["count"])]
    assert covered == list(range(100))


def test_engine_partition_writes_a_manifest_read_back_identically(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "SHARD_SIZE", 7)
    inputs = [write(tmp_path / "in" / f"{i:03d}.png", b"p" * i) for i in range(101)]
    spec = spec_for(str(tmp_path / "out"), mini_batch_size="2")
    descriptors = partition(FileDataset(path=str(tmp_path / "in")), spec)

    expected, _ = partition_dataset(FileDataset(path=str(tmp_path / "in")), files_of(2))
    assert len(expected) == 51
    assert descriptors == [mb.descriptor() for mb in expected]
    assert all(set(d) == {"id", "index", "count", "label"} and d["count"] == 1 for d in descriptors)
    assert [d["index"] for d in descriptors] == list(range(51))
    assert descriptors[3] == {
        "id": "mb-000003",
        "index": 3,
        "count": 1,
        "label": "mb-000003 2 files 006.png .. 007.png",
    }
    assert descriptors[-1]["label"] == "mb-000050 1 file 100.png"

    layout = spec.layout()
    header = read_manifest_header(layout)
    assert header["total_mini_batches"] == 51
    assert header["shard_size"] == 7
    assert header["input_files"] == 101
    shards = sorted(os.listdir(tmp_path / "out" / "_parallelrun" / "manifest"))
    assert shards == [f"shard-{n:06d}.jsonl" for n in range(8)]

    read_back = [read_mini_batch(layout, i) for i in range(51)]
    assert [mb.to_dict() for mb in read_back] == [mb.to_dict() for mb in expected]
    assert [mb.to_dict() for mb in iter_mini_batches(layout)] == [mb.to_dict() for mb in expected]
    assert [f for mb in read_back for f in mb.files] == [str(p) for p in inputs]


def test_engine_partition_manifest_keeps_tabular_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "SHARD_SIZE", 7)
    write_text_table(make_table(200), tmp_path / "in" / "a.csv", "csv")
    write_parquet(make_table(90), tmp_path / "in" / "b.parquet", row_group_size=10)
    spec = spec_for(str(tmp_path / "out"), mini_batch_size="512")
    descriptors = partition(TabularDataset(path=str(tmp_path / "in"), format="csv"), spec)
    expected, _ = partition_dataset(TabularDataset(path=str(tmp_path / "in"), format="csv"), bytes_of(512))
    assert len(descriptors) == len(expected) > 7
    layout = spec.layout()
    assert [read_mini_batch(layout, i) for i in range(len(expected))] == expected
    assert list(iter_mini_batches(layout)) == expected
    assert descriptors[0]["label"] == "mb-000000 a.csv bytes 0-512"

    descriptors = partition(TabularDataset(path=str(tmp_path / "in"), format="parquet"), spec)
    parquet = TabularDataset(path=str(tmp_path / "in"), format="parquet")
    expected, _ = partition_dataset(parquet, bytes_of(512))
    assert list(iter_mini_batches(layout)) == expected
    assert read_mini_batch(layout, len(expected) - 1) == expected[-1]
    assert all(mb.piece.unit == "row_groups" for mb in expected)


def test_engine_partition_with_more_than_one_real_shard(tmp_path):
    """1001 mini-batches with the real SHARD_SIZE: the second shard holds exactly one."""
    files = [f"/data/{i:05d}.png" for i in range(1001)]
    spec = spec_for(str(tmp_path / "out"), mini_batch_size="1")
    descriptors = partition(FileDataset(files=files), spec)
    assert len(descriptors) == 1001
    layout = spec.layout()
    assert read_mini_batch(layout, 1000).files == ("/data/01000.png",)
    assert read_mini_batch(layout, 999).files == ("/data/00999.png",)
    assert [mb.files[0] for mb in iter_mini_batches(layout)] == files


def test_engine_partition_of_an_empty_folder_writes_an_empty_manifest(tmp_path):
    (tmp_path / "in").mkdir()
    spec = spec_for(str(tmp_path / "out"))
    assert partition(FileDataset(path=str(tmp_path / "in")), spec) == []
    assert read_manifest_header(spec.layout())["total_mini_batches"] == 0
    assert list(iter_mini_batches(spec.layout())) == []


def test_engine_partition_on_object_storage(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "SHARD_SIZE", 7)
    for i in range(20):
        write(tmp_path / "in" / f"{i:02d}.png")
    url = f"memory://parallelrun-test-{uuid.uuid4().hex}/out"
    try:
        spec = spec_for(url, mini_batch_size="1")
        descriptors = partition(FileDataset(path=str(tmp_path / "in")), spec)
        layout = RunLayout(spec.layout().output)
        assert len(descriptors) == 20
        assert read_mini_batch(layout, 15).files == (str(tmp_path / "in" / "15.png"),)
        assert [mb.index for mb in iter_mini_batches(layout)] == list(range(20))
    finally:
        fs = fsspec.filesystem("memory")
        root = url.removeprefix("memory://").split("/")[0]
        if fs.exists(root):
            fs.rm(root, recursive=True)
