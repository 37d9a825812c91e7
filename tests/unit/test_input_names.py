"""A worker sees a remote input under its own name, as it would on local disk (core/inputs/reading.py).

On the real S3 (moto) and Azure Blob (Azurite) servers: a FileDataset mini-batch whose files
include equal names from two folders is staged so that ``run()`` sees every file under its own
basename, none overwritten; the report still names the original URLs.
"""

from __future__ import annotations

import csv
import io
import os
import textwrap
from pathlib import Path

import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.inputs.reading import stage_mini_batch, staged_names
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.location import clear_storage_options, set_storage_options

# One line per file: the name run() sees, the file's content, and where it lies.
NAMES_SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        assert len(set(mini_batch)) == len(mini_batch), mini_batch
        rows = []
        for path in mini_batch:
            with open(path) as f:
                rows.append(f"{os.path.basename(path)}|{f.read()}|{path}")
        return rows
"""


@pytest.fixture
def registered(object_store):
    """The store's filesystem registered for its folder, as ``use_connections`` does in a task."""
    set_storage_options(object_store.url(), object_store.fs())
    yield object_store
    clear_storage_options()


def test_staged_names_keep_the_basename_and_only_the_folders_that_tell_files_apart():
    assert staged_names(["s3://b/in/img_0001.png"]) == ["img_0001.png"]
    assert staged_names(["s3://b/in/a/x.png", "s3://b/in/b/x.png", "s3://b/in/y.png"]) == [
        "a/x.png",
        "b/x.png",
        "y.png",
    ]
    # Files in the bucket's root, and names with dots and spaces, stay as they are.
    assert staged_names(["s3://b/x.tar.gz", "s3://b/my file.png"]) == ["x.tar.gz", "my file.png"]
    # A folder shared only by part of its name is not shared.
    assert staged_names(["s3://b/in1/x.png", "s3://b/in2/x.png"]) == ["in1/x.png", "in2/x.png"]
    # A path part that would leave the mini-batch's folder cannot.
    assert all(".." not in n.split("/") for n in staged_names(["s3://b/a/../x", "s3://b/c/x"]))


def test_a_local_input_is_handed_over_where_it_is(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    mb = MiniBatch(index=0, kind="files", files=(str(tmp_path / "a" / "x.png"),))
    staged = stage_mini_batch(mb, str(tmp_path / "scratch"))
    assert staged.files == (str(tmp_path / "a" / "x.png"),)
    assert not (tmp_path / "scratch").exists()


def test_run_sees_remote_inputs_under_their_own_names_none_overwritten(registered, tmp_path: Path):
    store = registered
    contents = {"in/a/x.png": "a-x", "in/b/x.png": "b-x", "in/b/y.png": "b-y", "in/z.png": "z"}
    for name, text in contents.items():
        store.put(name, text.encode())
    script = tmp_path / "entry.py"
    script.write_text(textwrap.dedent(NAMES_SCRIPT))
    spec = RunSpec(
        output_path=store.url("out"),
        config=ParallelRunConfig(entry_script="x.py", mini_batch_size="10", warm_workers=False),
        entry_script=str(script),
    )
    (descriptor,) = steps.partition(FileDataset(path=store.url("in")), spec)
    (status,) = steps.run_mini_batches([descriptor["index"]], spec)
    assert status.succeeded, status.error_message
    summary = steps.aggregate(spec)
    assert summary["status"] == "succeeded"

    fs = store.fs()
    rows = [
        line.split("|")
        for line in fs.cat_file(store.path("out", "parallel_run_step.txt")).decode().splitlines()
    ]
    seen = {(name, text) for name, text, _ in rows}
    assert seen == {("x.png", "a-x"), ("x.png", "b-x"), ("y.png", "b-y"), ("z.png", "z")}
    # Equal names from two folders lie in sub-folders named as the folders; the rest side by side.
    where = {text: path for _, text, path in rows}
    assert where["a-x"].endswith(os.path.join("a", "x.png")) and where["b-x"].endswith(
        os.path.join("b", "x.png")
    )
    assert os.path.dirname(os.path.dirname(where["a-x"])) == os.path.dirname(where["z"])

    # The report and the status name the inputs as the user gave them, not the local copies.
    originals = {store.url(name) for name in contents}
    assert set(status.inputs) == originals
    report = fs.cat_file(store.path("out", "_parallelrun", "processed_mini_batches.csv")).decode()
    (row,) = list(csv.DictReader(io.StringIO(report)))
    assert set(row["inputs"].split(";")) == originals


def test_a_parquet_piece_is_staged_as_its_bytes_when_whole_and_as_its_rows_when_not(registered, tmp_path):
    """A whole file is copied as it is (no decoding in the task's process); a part holds only its rows."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_parallelrun.core.inputs.minibatch import TabularPiece
    from airflow_parallelrun.core.inputs.reading import read_table_piece

    local = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": list(range(10))}), local, row_group_size=5)
    url = registered.put("in/t.parquet", local.read_bytes())
    for folder in ("whole", "part"):
        (tmp_path / folder).mkdir()
    whole = MiniBatch(index=0, kind="tabular", piece=TabularPiece(url, "parquet", "row_groups", 0, 2))
    staged = stage_mini_batch(whole, str(tmp_path / "whole"))
    assert Path(staged.piece.path).read_bytes() == local.read_bytes()
    assert read_table_piece(staged.piece)["id"].tolist() == list(range(10))
    part = MiniBatch(index=1, kind="tabular", piece=TabularPiece(url, "parquet", "row_groups", 1, 2))
    staged = stage_mini_batch(part, str(tmp_path / "part"))
    pd.testing.assert_frame_equal(read_table_piece(staged.piece), pd.DataFrame({"id": list(range(5, 10))}))
