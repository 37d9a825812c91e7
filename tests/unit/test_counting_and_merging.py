"""Counting what a piece holds, and merging parts whatever types each part's rows inferred.

Every run here is real: a real input folder, ``steps.partition``, real worker processes,
``steps.aggregate``. Entry scripts record their calls to a file named by ``$CALLS_FILE``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.inputs.datasets import TabularDataset
from airflow_parallelrun.core.spec import RunSpec

# Raises on an empty DataFrame, as many models do ("Expected 2D array, got 0 samples").
SCORING_SCRIPT = """
    import os
    import pandas as pd

    def run(mini_batch):
        with open(os.environ["CALLS_FILE"], "a") as f:
            f.write(f"{len(mini_batch)}\\n")
        if len(mini_batch) == 0:
            raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required")
        return pd.DataFrame({"id": mini_batch["id"], "length": mini_batch["text"].str.len()})
"""


def make_spec(tmp_path: Path, source: str, size: str, fmt: str = "text", **config) -> RunSpec:
    script = tmp_path / "entry.py"
    script.write_text(textwrap.dedent(source).lstrip("\n"))
    return RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(
            entry_script="x.py",
            mini_batch_size=size,
            append_row_format=fmt,
            environment_variables={"CALLS_FILE": str(tmp_path / "calls.txt")},
            **config,
        ),
        entry_script=str(script),
    )


def run_all(spec: RunSpec, dataset: TabularDataset) -> tuple[list, dict]:
    descriptors = steps.partition(dataset, spec)
    statuses = steps.run_mini_batches(range(len(descriptors)), spec)
    return statuses, steps.aggregate(spec)


# --- a piece that holds no row ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_format", "output_format"), [("csv", "text"), ("jsonl", "csv"), ("csv", "parquet")]
)
def test_a_byte_range_inside_one_long_row_is_a_succeeded_mini_batch_of_zero_items(
    tmp_path, input_format, output_format
):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = pd.DataFrame({"id": [0, 1], "text": ["x" * 3000, "short"]})
    if input_format == "csv":
        rows.to_csv(folder / "t.csv", index=False)
    else:
        rows.to_json(folder / "t.jsonl", orient="records", lines=True)
    spec = make_spec(tmp_path, SCORING_SCRIPT, "1KB", output_format)

    statuses, summary = run_all(spec, TabularDataset(path=str(folder), format=input_format))

    # A 3 KB row in 1 KB pieces: 1 row, 0 rows (the middle of the long row), 1 row.
    assert [s.items_total for s in statuses] == [1, 0, 1]
    assert [s.status for s in statuses] == ["succeeded"] * 3
    assert [(s.items_succeeded, s.items_failed, s.tries) for s in statuses] == [
        (1, 0, 1),
        (0, 0, 1),
        (1, 0, 1),
    ]
    # run() was never given an empty DataFrame.
    assert (tmp_path / "calls.txt").read_text().split() == ["1", "1"]
    assert (summary["status"], summary["total_items"], summary["failed_items"]) == ("succeeded", 2, 0)
    merged = tmp_path / "out" / spec.config.output_file_name
    if output_format == "text":
        assert merged.read_text().splitlines() == ["0 3000", "1 5"]
    elif output_format == "csv":
        assert pd.read_csv(merged).to_dict("list") == {"id": [0, 1], "length": [3000, 5]}
    else:
        assert pq.read_table(merged).to_pydict() == {"id": [0, 1], "length": [3000, 5]}


# --- parts whose rows inferred different types --------------------------------------------------

ECHO_SCRIPT = """
    def run(mini_batch):
        return mini_batch
"""


def write_input(folder: Path, fmt: str, frames: list[pd.DataFrame]) -> None:
    folder.mkdir()
    for name, frame in zip("ab", frames, strict=True):
        if fmt == "csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        elif fmt == "jsonl":
            frame.to_json(folder / f"{name}.jsonl", orient="records", lines=True)
        else:
            frame.to_parquet(folder / f"{name}.parquet", index=False)


@pytest.mark.parametrize("input_format", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("output_format", ["parquet", "csv"])
def test_parts_int_in_one_and_float_with_nan_in_another_merge_with_values_intact(
    tmp_path, input_format, output_format
):
    # Each file is one piece: the first infers int64 scores, the second float64 with NaN.
    frames = [
        pd.DataFrame({"id": [0, 1, 2], "score": [1, 2, 3]}),
        pd.DataFrame({"id": [3, 4, 5], "score": [None, 5.5, None]}),
    ]
    write_input(tmp_path / "in", input_format, frames)
    spec = make_spec(tmp_path, ECHO_SCRIPT, "1MB", output_format, error_threshold=0)

    statuses, summary = run_all(spec, TabularDataset(path=str(tmp_path / "in"), format=input_format))

    assert len(statuses) == 2 and summary["status"] == "succeeded"
    merged = tmp_path / "out" / spec.config.output_file_name
    got = pq.read_table(merged).to_pandas() if output_format == "parquet" else pd.read_csv(merged)
    assert got["id"].tolist() == [0, 1, 2, 3, 4, 5]
    assert got["score"].tolist()[:3] == [1.0, 2.0, 3.0] and got["score"].tolist()[4] == 5.5
    assert got["score"].isna().tolist() == [False, False, False, True, False, True]


NOTES_SCRIPT = """
    def run(mini_batch):
        # No note at all in the first mini-batch: pandas makes that column all None, typed null.
        return [{"id": int(i), "note": None if i < 3 else f"n{i}"} for i in mini_batch["id"]]
"""


def test_a_column_all_null_in_one_parquet_part_takes_the_other_parts_type(tmp_path):
    write_input(tmp_path / "in", "csv", [pd.DataFrame({"id": [0, 1, 2]}), pd.DataFrame({"id": [3, 4]})])
    spec = make_spec(tmp_path, NOTES_SCRIPT, "1MB", "parquet")

    _, summary = run_all(spec, TabularDataset(path=str(tmp_path / "in")))

    assert summary["status"] == "succeeded"
    table = pq.read_table(tmp_path / "out" / spec.config.output_file_name)
    assert str(table.schema.field("note").type) in ("string", "large_string")
    assert table.to_pydict() == {"id": [0, 1, 2, 3, 4], "note": [None, None, None, "n3", "n4"]}


# --- a piece that cannot be read: its real item count, or "unknown" ------------------------------


def test_a_mini_batch_that_never_ran_counts_the_rows_of_its_piece_or_says_unknown(tmp_path):
    folder = tmp_path / "in"
    write_input(folder, "csv", [pd.DataFrame({"id": range(4)}), pd.DataFrame({"id": range(7)})])
    spec = make_spec(tmp_path, ECHO_SCRIPT, "1MB", error_threshold=-1)
    descriptors = steps.partition(TabularDataset(path=str(folder)), spec)
    assert len(descriptors) == 2
    (folder / "b.csv").unlink()  # gone before any task ran: its rows cannot be counted any more

    summary = steps.aggregate(spec)  # no run task ran at all

    assert summary["failed_mini_batches"] == 2
    # a.csv is still there: its 4 rows are counted. b.csv's are unknown, not a made-up 1.
    assert (summary["total_items"], summary["failed_items"]) == (4, 4)
    assert summary["mini_batches_with_unknown_items"] == 1
    errors = tmp_path / "out" / "_parallelrun" / "errors"
    gone, there = (json.loads((errors / f"mb-00000{i}.json").read_text()) for i in (1, 0))
    assert gone["items_unknown"] is True and gone["items_failed"] == 0
    assert "items_unknown" not in there and there["items_failed"] == 4


def test_remote_files_that_cannot_be_fetched_count_every_file_of_their_mini_batch(tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    root = f"/h2-count-{tmp_path.name}"
    for i in range(5):
        memory.pipe_file(f"{root}/in/f{i}.txt", f"text {i}\n".encode())
    script = tmp_path / "entry.py"
    script.write_text("def run(mini_batch):\n    return [open(p).read() for p in mini_batch]\n")
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(entry_script="x.py", mini_batch_size="3", error_threshold=-1),
        entry_script=str(script),
    )
    from airflow_parallelrun.core.inputs.datasets import FileDataset

    descriptors = steps.partition(FileDataset(path=f"memory://{root}/in"), spec)
    memory.rm(f"{root}/in/f1.txt")  # gone between listing and fetching

    statuses = steps.run_mini_batches(range(len(descriptors)), spec)
    memory.rm(root, recursive=True)

    assert [s.status for s in statuses] == ["failed", "succeeded"]
    assert (statuses[0].items_total, statuses[0].items_failed, statuses[0].items_unknown) == (3, 3, False)
