"""Tests for outputs (core/outputs/parts.py), item counting (core/outputs/status.py), failure bounds
(core/outputs/thresholds.py) and the aggregate step (steps.aggregate) on a hand-made run folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import RunOutputError, ThresholdExceeded
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.outputs.counting import RunCounts, count_items
from airflow_parallelrun.core.outputs.merge import merge_parts
from airflow_parallelrun.core.outputs.parts import (
    PART_EXTENSIONS,
    count_results,
    format_text,
    write_part,
)
from airflow_parallelrun.core.outputs.report import REPORT_COLUMNS
from airflow_parallelrun.core.outputs.status import FAILED, SUCCEEDED, BatchStatus
from airflow_parallelrun.core.outputs.thresholds import (
    AllowedFailedCount,
    AllowedFailedPercent,
    ErrorThreshold,
    exceeded,
)
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.steps import aggregate, partition
from airflow_parallelrun.core.storage.manifest import read_manifest_header, read_mini_batch

# --- format_text: Azure's append_row ---------------------------------------------------------------


def test_format_text_writes_str_of_each_list_element_on_its_own_line():
    result = ["a.png: 3", 7, 2.5, 0.1, 1e20, None, True, ("b.png", 4), {"id": 1}]
    assert format_text(result) == (b"a.png: 3\n7\n2.5\n0.1\n1e+20\nNone\nTrue\n('b.png', 4)\n{'id': 1}\n")


def test_format_text_keeps_non_ascii_text():
    assert format_text(["café 数字"]) == "café 数字\n".encode()


def test_format_text_writes_dataframe_values_separated_by_one_space_without_header_or_index():
    df = pd.DataFrame(
        {"name": ["a.png", "b c.png"], "label": [3, 4], "p": [0.5, 1.0]},
        index=[10, 20],
    )
    assert format_text(df) == b"a.png 3 0.5\nb c.png 4 1.0\n"


def test_format_text_single_column_dataframe():
    assert format_text(pd.DataFrame({"p": [0.25, 0.125]})) == b"0.25\n0.125\n"


@pytest.mark.parametrize(
    "empty", [[], pd.DataFrame(), pd.DataFrame({"a": [], "b": []})], ids=["list", "frame", "no-rows"]
)
def test_format_text_of_nothing_is_nothing(empty):
    assert format_text(empty) == b""


# --- count_results -------------------------------------------------------------------------------


def test_count_results_counts_list_elements_and_dataframe_rows():
    assert count_results([]) == 0
    assert count_results(["a", "b", None]) == 3
    assert count_results(pd.DataFrame({"x": range(5)})) == 5
    assert count_results(pd.DataFrame()) == 0


@pytest.mark.parametrize(
    ("result", "returned"),
    [
        (None, "returned NoneType;"),
        ({"a.png": 3}, "returned dict {'a.png': 3}"),
        ("a.png: 3", "returned str 'a.png: 3'"),
        (("a", "b"), "returned tuple ('a', 'b')"),
        (42, "returned int 42"),
    ],
)
def test_count_results_errors_say_what_was_returned_and_what_is_expected(result, returned):
    with pytest.raises(RunOutputError) as info:
        count_results(result)
    message = str(info.value)
    assert returned in message
    assert "expected a list" in message
    assert "pandas DataFrame" in message
    assert "Return the results, e.g." in message


def test_count_results_error_shortens_a_long_value():
    with pytest.raises(RunOutputError) as info:
        count_results("x" * 1000)
    assert "x" * 70 in str(info.value)
    assert "x" * 100 not in str(info.value)
    assert "..." in str(info.value)


# --- count_items (Azure's rule: the shortfall failed) ---------------------------------------------


@pytest.mark.parametrize(
    ("total", "returned", "expected"),
    [
        (10, 10, (10, 10, 0)),
        (10, 7, (10, 7, 3)),  # shortfall: the missing results count as failed items
        (10, 0, (10, 0, 10)),
        (10, 12, (10, 10, 0)),  # too many: every input succeeded, never a negative failure
        (1, 1000, (1, 1, 0)),
        (0, 0, (0, 0, 0)),
        (None, 4, (4, 4, 0)),  # unknown total (a table piece read by bytes): what came back counts
        (None, 0, (0, 0, 0)),
    ],
)
def test_count_items(total, returned, expected):
    assert count_items(total, returned) == expected


def test_batch_status_round_trips_and_ignores_unknown_fields():
    status = BatchStatus(id="mb-000001", index=1, status=SUCCEEDED, inputs=["a"], items_total=3)
    data = {**status.to_dict(), "added_in_a_later_version": 1}
    assert BatchStatus.from_dict(json.loads(json.dumps(data))) == status
    assert status.succeeded
    assert not BatchStatus(id="mb-000002", index=2, status=FAILED).succeeded


# --- write_part + merge_parts --------------------------------------------------------------------


def write_parts(tmp_path: Path, results: list, fmt: str) -> list[Path | None]:
    """Write each result as a part; a None result stands for a mini-batch without a part."""
    paths: list[Path | None] = []
    for i, result in enumerate(results):
        if result is None:
            paths.append(None)
            continue
        path = tmp_path / f"part-{i:04d}.{PART_EXTENSIONS[fmt]}"
        write_part(result, fmt, str(path))
        paths.append(path)
    return paths


def merge_files(paths: list[Path | None], fmt: str, target: Path) -> int:
    with contextlib.ExitStack() as stack:
        handles = [None if p is None else stack.enter_context(open(p, "rb")) for p in paths]
        out = stack.enter_context(open(target, "wb"))
        return merge_parts(iter(handles), fmt, out)


def test_text_parts_merge_in_the_given_order_and_skip_missing_parts(tmp_path):
    results = [
        ["a.png: 1", "b.png: 2"],
        None,
        pd.DataFrame({"name": ["c.png", "d.png"], "label": [3, 4]}),
        [],
        ["e.png: 5"],
    ]
    target = tmp_path / "merged.txt"
    assert merge_files(write_parts(tmp_path, results, "text"), "text", target) == 4
    assert target.read_bytes() == b"a.png: 1\nb.png: 2\nc.png 3\nd.png 4\ne.png: 5\n"


def test_csv_parts_merge_with_one_header_in_order(tmp_path):
    results = [
        [{"id": 1, "label": "one"}, {"id": 2, "label": "two"}],
        None,
        pd.DataFrame({"id": [3, 4, 5], "label": ["three", "four", "five, with a comma"]}),
        [{"id": 6, "label": "six"}],
    ]
    target = tmp_path / "merged.csv"
    assert merge_files(write_parts(tmp_path, results, "csv"), "csv", target) == 3
    text = target.read_text()
    assert text.count("id,label") == 1
    assert text.startswith("id,label\n")
    assert_frame_equal(
        pd.read_csv(target),
        pd.DataFrame(
            {"id": [1, 2, 3, 4, 5, 6], "label": ["one", "two", "three", "four", "five, with a comma", "six"]}
        ),
    )


def test_csv_parts_of_plain_values_use_a_result_column(tmp_path):
    target = tmp_path / "merged.csv"
    merge_files(write_parts(tmp_path, [["a: 1", "b: 2"], [3]], "csv"), "csv", target)
    assert target.read_text() == "result\na: 1\nb: 2\n3\n"


def test_csv_parts_with_different_columns_are_refused(tmp_path):
    results = [[{"id": 1, "label": "a"}], [{"id": 2, "score": 0.5}]]
    with pytest.raises(RunOutputError) as info:
        merge_files(write_parts(tmp_path, results, "csv"), "csv", tmp_path / "merged.csv")
    message = str(info.value)
    assert "id,label" in message
    assert "id,score" in message
    assert "same columns" in message


def test_parquet_parts_merge_in_order(tmp_path):
    results = [
        pd.DataFrame({"id": [1, 2], "p": [0.1, 0.2]}),
        None,
        [{"id": 3, "p": 0.3}, {"id": 4, "p": 0.4}, {"id": 5, "p": 0.5}],
        pd.DataFrame({"id": [6], "p": [0.6]}),
    ]
    target = tmp_path / "merged.parquet"
    assert merge_files(write_parts(tmp_path, results, "parquet"), "parquet", target) == 3
    assert_frame_equal(
        pq.read_table(target).to_pandas(),
        pd.DataFrame({"id": [1, 2, 3, 4, 5, 6], "p": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}),
    )


def test_parquet_parts_with_compatible_schemas_are_cast_to_the_first(tmp_path):
    results = [
        pd.DataFrame({"id": pd.Series([1, 2], dtype="int64"), "p": [0.5, 0.25], "label": ["a", "b"]}),
        # int32 ids, whole-number scores stored as ints, and a label that is missing everywhere.
        pd.DataFrame({"id": pd.Series([3], dtype="int32"), "p": [1], "label": [None]}),
    ]
    target = tmp_path / "merged.parquet"
    merge_files(write_parts(tmp_path, results, "parquet"), "parquet", target)
    table = pq.read_table(target)
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("p").type == pa.float64()
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("p").to_pylist() == [0.5, 0.25, 1.0]
    assert table.column("label").to_pylist() == ["a", "b", None]


def _encodings(path: Path) -> dict[str, set[str]]:
    meta = pq.ParquetFile(path).metadata
    return {
        meta.schema.column(i).name: set(meta.row_group(g).column(i).encodings)
        for g in range(meta.num_row_groups)
        for i in range(meta.num_columns)
    }


def test_parquet_dictionary_encodes_only_columns_that_repeat(tmp_path):
    """Numbers (ids, scores) are written plain, in the parts and in the merged file: a
    dictionary for values that never repeat costs time and then space. Labels keep one."""
    results = [
        pd.DataFrame(
            {
                "id": range(i * 1000, (i + 1) * 1000),
                "p": [j / 997 for j in range(1000)],
                "label": ["cat", "dog"] * 500,
            }
        )
        for i in range(2)
    ]
    parts = write_parts(tmp_path, results, "parquet")
    target = tmp_path / "merged.parquet"
    merge_files(parts, "parquet", target)
    for path in [*parts, target]:
        encodings = _encodings(Path(path))
        assert not encodings["id"] & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}, (path, encodings)
        assert not encodings["p"] & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}, (path, encodings)
        assert encodings["label"] & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}, (path, encodings)
    assert pq.read_table(target).column("label").to_pylist() == ["cat", "dog"] * 1000


@pytest.mark.parametrize(
    "second",
    [
        pd.DataFrame({"id": [2], "score": [0.5]}),  # another column name
        pd.DataFrame({"id": [2], "p": [0.5], "extra": [1]}),  # one column more
    ],
    ids=["renamed", "extra-column"],
)
def test_parquet_parts_with_different_columns_are_refused(tmp_path, second):
    results = [pd.DataFrame({"id": [1], "p": [0.25]}), second]
    with pytest.raises(RunOutputError) as info:
        merge_files(write_parts(tmp_path, results, "parquet"), "parquet", tmp_path / "merged.parquet")
    message = str(info.value)
    assert "parquet parts have different columns: ['id', 'p'] then ['id'," in message
    assert "make run() return the same columns for every mini-batch" in message


def test_parquet_parts_whose_types_cannot_be_promoted_merge_as_strings(tmp_path):
    results = [pd.DataFrame({"id": [1], "p": [0.25]}), pd.DataFrame({"id": ["two"], "p": [0.5]})]
    merge_files(write_parts(tmp_path, results, "parquet"), "parquet", tmp_path / "merged.parquet")
    assert pq.read_table(tmp_path / "merged.parquet").to_pydict() == {"id": ["1", "two"], "p": [0.25, 0.5]}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_empty_result_does_not_break_the_merge(tmp_path, fmt):
    """A mini-batch whose run() returned [] (all its items failed) adds no rows and no columns.

    Azure appends nothing for it; the other mini-batches' outputs still merge.
    """
    results = [
        [],
        [{"id": 1, "label": "a"}],
        [],
        pd.DataFrame({"id": [2], "label": ["b"]}),
    ]
    target = tmp_path / f"merged.{fmt}"
    merge_files(write_parts(tmp_path, results, fmt), fmt, target)
    got = pd.read_csv(target) if fmt == "csv" else pq.read_table(target).to_pandas()
    assert_frame_equal(got, pd.DataFrame({"id": [1, 2], "label": ["a", "b"]}))


@pytest.mark.parametrize("fmt", ["text", "csv", "parquet"])
def test_two_hundred_parts_merge_in_order(tmp_path, fmt):
    results = [[{"id": i * 3 + k, "label": f"mb{i}-{k}"} for k in range(3)] for i in range(200)]
    results[17] = None
    target = tmp_path / f"merged.{PART_EXTENSIONS[fmt]}"
    assert merge_files(write_parts(tmp_path, results, fmt), fmt, target) == 199
    expected = [r for result in results if result is not None for r in result]
    if fmt == "text":
        assert target.read_text().splitlines() == [str(r) for r in expected]
        return
    got = pd.read_csv(target) if fmt == "csv" else pq.read_table(target).to_pandas()
    assert_frame_equal(got, pd.DataFrame.from_records(expected))


def test_merging_no_parts_writes_nothing(tmp_path):
    out = io.BytesIO()
    assert merge_parts(iter([None, None]), "text", out) == 0
    assert merge_parts(iter([]), "csv", out) == 0
    assert out.getvalue() == b""


# --- thresholds ----------------------------------------------------------------------------------


def counts(failed_items: int = 0, failed_mbs: int = 0, total_mbs: int = 100, total_items: int = 1000):
    return RunCounts(
        total_mini_batches=total_mbs,
        failed_mini_batches=failed_mbs,
        total_items=total_items,
        failed_items=failed_items,
    )


@pytest.mark.parametrize(("failed", "passes"), [(4, True), (5, True), (6, False)])
def test_error_threshold_bounds_failed_items(failed, passes):
    reason = ErrorThreshold(5).check(counts(failed_items=failed))
    if passes:
        assert reason is None
    else:
        assert reason == "failed items 6 > error_threshold 5"


def test_error_threshold_zero_tolerates_no_failed_item():
    assert ErrorThreshold(0).check(counts(failed_items=0)) is None
    assert ErrorThreshold(0).check(counts(failed_items=1)) == "failed items 1 > error_threshold 0"


@pytest.mark.parametrize(("failed", "passes"), [(2, True), (3, True), (4, False)])
def test_allowed_failed_count_bounds_failed_mini_batches(failed, passes):
    reason = AllowedFailedCount(3).check(counts(failed_mbs=failed, failed_items=10_000))
    if passes:
        assert reason is None
    else:
        assert reason == "failed mini-batches 4 > allowed_failed_count 3"


@pytest.mark.parametrize(
    ("failed", "total", "passes"),
    [(24, 100, True), (25, 100, True), (26, 100, False), (1, 4, True), (2, 7, False)],
)
def test_allowed_failed_percent_bounds_the_share_of_failed_mini_batches(failed, total, passes):
    reason = AllowedFailedPercent(25).check(counts(failed_mbs=failed, total_mbs=total))
    if passes:
        assert reason is None
    else:
        assert reason is not None
        assert f"({failed} of {total})" in reason
        assert "> allowed_failed_percent 25%" in reason


def test_allowed_failed_percent_takes_fractions():
    assert AllowedFailedPercent(2.5).check(counts(failed_mbs=25, total_mbs=1000)) is None
    assert AllowedFailedPercent(2.5).check(counts(failed_mbs=26, total_mbs=1000)) == (
        "failed mini-batches 2.6% (26 of 1000) > allowed_failed_percent 2.5%"
    )


@pytest.mark.parametrize("off", [-1, None])
def test_minus_one_and_none_ignore_a_bound(off):
    everything_failed = counts(failed_items=1000, failed_mbs=100)
    assert ErrorThreshold(off).check(everything_failed) is None
    assert AllowedFailedCount(off).check(everything_failed) is None
    assert AllowedFailedPercent(off).check(everything_failed) is None


def test_every_exceeded_bound_is_reported_together():
    bounds = [ErrorThreshold(10), AllowedFailedCount(1), AllowedFailedPercent(5)]
    assert exceeded(bounds, counts(failed_items=11, failed_mbs=6)) == [
        "failed items 11 > error_threshold 10",
        "failed mini-batches 6 > allowed_failed_count 1",
        "failed mini-batches 6% (6 of 100) > allowed_failed_percent 5%",
    ]
    assert exceeded(bounds, counts(failed_items=11, failed_mbs=1)) == ["failed items 11 > error_threshold 10"]
    assert exceeded(bounds, counts(failed_items=10, failed_mbs=1)) == []


def test_zero_mini_batches_exceed_nothing():
    empty = RunCounts(0, 0, 0, 0)
    assert empty.failed_percent == 0.0
    assert exceeded([ErrorThreshold(0), AllowedFailedCount(0), AllowedFailedPercent(0)], empty) == []


# --- steps.aggregate on a hand-made run folder ----------------------------------------------------

FILE_NAMES = [f"{i:02d}.png" for i in range(10)]


def make_run(tmp_path: Path, **config) -> RunSpec:
    """Partition 10 files in mini-batches of 3: mb-000000..mb-000002 hold 3 files, mb-000003 one."""
    for name in FILE_NAMES:
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"png")
    settings = {"mini_batch_size": "3", **config}
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(entry_script="x.py", **settings),
        entry_script="",
    )
    assert len(partition(FileDataset(path=str(tmp_path / "in"), pattern="*.png"), spec)) == 4
    return spec


def run_key_of(spec: RunSpec) -> str:
    """Return the key of the run the manifest at the spec's output path belongs to."""
    return str(read_manifest_header(spec.layout())["run_key"])


def finish(spec: RunSpec, tmp_path: Path, index: int, results: list | None, error: str = "") -> None:
    """Publish what a run task publishes: its part (when it succeeded with append_row), then its status."""
    layout = spec.layout()
    mb = read_mini_batch(layout, index)
    config = spec.config
    part = None
    if results is not None:
        total, succeeded, failed = count_items(mb.items, len(results))
        if config.output_action == "append_row":
            ext = PART_EXTENSIONS[config.append_row_format]
            local = tmp_path / f"local-{mb.id}.{ext}"
            write_part(results, config.append_row_format, str(local))
            part = layout.part(mb.id, ext, run_key_of(spec))
            layout.output.put_file(str(local), part)
    else:
        total, succeeded, failed = mb.items, 0, mb.items
    status = BatchStatus(
        id=mb.id,
        index=index,
        status=SUCCEEDED if results is not None else FAILED,
        inputs=mb.inputs,
        tries=1 if results is not None else 3,
        items_total=total,
        items_succeeded=succeeded,
        items_failed=failed,
        items_returned=len(results or []),
        seconds_total=0.5,
        seconds_run=0.25,
        error_category="" if results is not None else "entry_script",
        error_message=error,
        part=part,
        run_key=run_key_of(spec),
    )
    layout.output.write_json(layout.status(mb.id), status.to_dict())


def stale_part(spec: RunSpec, tmp_path: Path, index: int) -> None:
    """Leave a part that no succeeded status points to (a failed try's, or a killed task's)."""
    layout = spec.layout()
    mb_id = f"mb-{index:06d}"
    local = tmp_path / f"stale-{mb_id}"
    local.write_bytes(b"STALE OUTPUT\n")
    ext = PART_EXTENSIONS[spec.config.append_row_format]
    layout.output.put_file(str(local), layout.part(mb_id, ext, run_key_of(spec)))


def populate(spec: RunSpec, tmp_path: Path) -> None:
    """mb0 and mb3 succeeded, mb1 failed on every try, mb2 never ran; written out of order."""
    finish(spec, tmp_path, 3, ["09.png: 9"])
    finish(spec, tmp_path, 1, None, error="ValueError: bad pixel in 04.png")
    finish(spec, tmp_path, 0, ["00.png: 0", "01.png: 1", "02.png: 2"])
    if spec.config.output_action == "append_row":
        stale_part(spec, tmp_path, 1)
        stale_part(spec, tmp_path, 2)


def read_report(spec: RunSpec) -> list[dict[str, str]]:
    with open(spec.layout().report, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == REPORT_COLUMNS
        return list(reader)


def test_aggregate_counts_reports_and_merges_succeeded_parts_in_order(tmp_path):
    spec = make_run(tmp_path)
    populate(spec, tmp_path)
    out = tmp_path / "out"

    summary = aggregate(spec)

    assert summary["status"] == "succeeded"
    assert summary["total_mini_batches"] == 4
    assert summary["succeeded_mini_batches"] == 2
    assert summary["failed_mini_batches"] == 2
    assert summary["total_items"] == 10
    assert summary["succeeded_items"] == 4
    assert summary["failed_items"] == 6  # 3 of the failed mini-batch, 3 of the one that never ran
    assert summary["returned_items"] == 4
    assert summary["output"] == str(out / "parallel_run_step.txt")
    assert summary["output_action"] == "append_row"
    assert summary["thresholds"] == {
        "error_threshold": 10,
        "allowed_failed_count": None,
        "allowed_failed_percent": None,
    }
    assert summary["thresholds_exceeded"] == []
    assert summary["input_files"] == 10
    assert summary["mini_batch_size"] == {"unit": "files", "value": 3}
    assert [(e["id"], e["category"]) for e in summary["first_errors"]] == [
        ("mb-000001", "entry_script"),
        ("mb-000002", "not_run"),
    ]
    assert summary["first_errors"][0]["message"] == "ValueError: bad pixel in 04.png"
    assert summary["first_errors"][1]["inputs"] == [str(out.parent / "in" / n) for n in FILE_NAMES[6:9]]
    assert json.loads((out / "_parallelrun" / "summary.json").read_text()) == summary
    assert summary["report"] == str(out / "_parallelrun" / "processed_mini_batches.csv")

    rows = read_report(spec)
    assert [r["id"] for r in rows] == ["mb-000000", "mb-000001", "mb-000002", "mb-000003"]
    assert [r["status"] for r in rows] == ["succeeded", "failed", "not_run", "succeeded"]
    assert [r["items_total"] for r in rows] == ["3", "3", "3", "1"]
    assert [r["items_failed"] for r in rows] == ["0", "3", "3", "0"]
    assert [r["tries"] for r in rows] == ["1", "3", "0", "1"]
    assert rows[0]["inputs"] == ";".join(str(out.parent / "in" / n) for n in FILE_NAMES[:3])
    assert rows[1]["error_message"] == "ValueError: bad pixel in 04.png"
    assert rows[0]["seconds_run"] == "0.250"

    assert (out / "parallel_run_step.txt").read_bytes() == b"00.png: 0\n01.png: 1\n02.png: 2\n09.png: 9\n"


def test_aggregate_again_replaces_its_outputs(tmp_path):
    spec = make_run(tmp_path)
    populate(spec, tmp_path)
    first = aggregate(spec)
    merged = (tmp_path / "out" / "parallel_run_step.txt").read_bytes()
    second = aggregate(spec)
    assert (tmp_path / "out" / "parallel_run_step.txt").read_bytes() == merged
    assert len(read_report(spec)) == 4
    # The same summary, but for when each step ran (the second aggregate ran later).
    assert first.pop("steps")["partition"] == second.pop("steps")["partition"]
    assert first == second


def test_aggregate_merges_csv_parts_with_one_header(tmp_path):
    spec = make_run(tmp_path, append_row_format="csv")
    finish(spec, tmp_path, 2, [{"file": "06.png", "label": 6}, {"file": "07.png", "label": 7}])
    finish(spec, tmp_path, 0, [{"file": "00.png", "label": 0}])
    finish(spec, tmp_path, 3, [{"file": "09.png", "label": 9}])
    summary = aggregate(spec)
    assert summary["output"] == str(tmp_path / "out" / "parallel_run_step.csv")
    # The shortfall of mb-000000 (1 of 3) and mb-000002 (2 of 3) counts as failed items.
    assert summary["failed_items"] == 2 + 1 + 3
    assert (tmp_path / "out" / "parallel_run_step.csv").read_text() == (
        "file,label\n00.png,0\n06.png,6\n07.png,7\n09.png,9\n"
    )


def test_aggregate_without_any_succeeded_parquet_part_has_no_output(tmp_path):
    spec = make_run(tmp_path, append_row_format="parquet", error_threshold=-1)
    finish(spec, tmp_path, 0, None, error="boom")
    summary = aggregate(spec)
    assert summary["output"] is None
    assert summary["status"] == "succeeded"
    assert summary["failed_mini_batches"] == 4
    assert not (tmp_path / "out" / "parallel_run_step.parquet").exists()


@pytest.mark.parametrize(
    ("bound", "reason"),
    [
        ({"error_threshold": 5}, "failed items 6 > error_threshold 5"),
        ({"allowed_failed_count": 1}, "failed mini-batches 2 > allowed_failed_count 1"),
        ({"allowed_failed_percent": 49}, "failed mini-batches 50% (2 of 4) > allowed_failed_percent 49%"),
    ],
)
def test_aggregate_raises_after_writing_everything_when_a_bound_is_exceeded(tmp_path, bound, reason):
    spec = make_run(tmp_path, **bound)
    populate(spec, tmp_path)
    out = tmp_path / "out"
    written = [
        out / "_parallelrun" / "summary.json",
        out / "_parallelrun" / "processed_mini_batches.csv",
        out / "parallel_run_step.txt",
    ]
    # The partition step left only a summary that says the run is running.
    assert json.loads(written[0].read_text())["status"] == "running"
    assert not any(p.exists() for p in written[1:])

    with pytest.raises(ThresholdExceeded) as info:
        aggregate(spec)

    message = str(info.value)
    assert reason in message
    assert "mini-batches: 2 failed of 4" in message
    assert "items: 6 failed of 10" in message
    assert "mb-000001" in message
    assert "ValueError: bad pixel in 04.png" in message
    assert "mb-000002" in message
    assert "[not_run]" in message
    assert str(out / "_parallelrun" / "processed_mini_batches.csv") in message

    assert all(p.exists() for p in written)
    summary = json.loads(written[0].read_text())
    assert summary["status"] == "failed"
    assert summary["thresholds_exceeded"] == [reason]
    assert summary["failed_items"] == 6
    assert len(read_report(spec)) == 4
    assert written[2].read_bytes() == b"00.png: 0\n01.png: 1\n02.png: 2\n09.png: 9\n"


@pytest.mark.parametrize(
    "bound", [{"error_threshold": 6}, {"allowed_failed_count": 2}, {"allowed_failed_percent": 50}]
)
def test_aggregate_succeeds_at_the_bound(tmp_path, bound):
    spec = make_run(tmp_path, **bound)
    populate(spec, tmp_path)
    assert aggregate(spec)["status"] == "succeeded"


def test_aggregate_names_every_exceeded_bound(tmp_path):
    spec = make_run(tmp_path, error_threshold=0, allowed_failed_count=0, allowed_failed_percent=0)
    populate(spec, tmp_path)
    with pytest.raises(ThresholdExceeded) as info:
        aggregate(spec)
    first_line = str(info.value).splitlines()[0]
    assert "error_threshold 0" in first_line
    assert "allowed_failed_count 0" in first_line
    assert "allowed_failed_percent 0%" in first_line


def test_aggregate_summary_only_writes_no_merged_file(tmp_path):
    spec = make_run(tmp_path, output_action="summary_only")
    populate(spec, tmp_path)
    summary = aggregate(spec)
    out = tmp_path / "out"
    assert summary["output"] is None
    assert summary["output_action"] == "summary_only"
    assert summary["succeeded_mini_batches"] == 2
    assert not (out / "parallel_run_step.txt").exists()
    assert sorted(p for p in os.listdir(out) if not p.startswith("_parallelrun")) == []
    assert len(read_report(spec)) == 4


def test_aggregate_counts_a_mini_batch_without_status_as_failed_with_all_its_items(tmp_path):
    spec = make_run(tmp_path, error_threshold=9)
    with pytest.raises(ThresholdExceeded) as info:
        aggregate(spec)
    assert "failed items 10 > error_threshold 9" in str(info.value)
    assert "mini-batches: 4 failed of 4" in str(info.value)
    assert [r["status"] for r in read_report(spec)] == ["not_run"] * 4
    assert [r["items_failed"] for r in read_report(spec)] == ["3", "3", "3", "1"]
