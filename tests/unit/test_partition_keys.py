"""Tests for ``partition_keys`` and ``run(mini_batch, mini_batch_context)``: one mini-batch per key group.

Each run goes through the three steps with real worker processes. The entry script writes what
it was given (the key values, the context and the rows' ids) to a file per call, so the tests
check that every group arrived whole and alone, with its own ``partition_key_value``.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs import key_groups
from airflow_parallelrun.core.inputs.datasets import FileDataset, TabularDataset
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.sql.source import SqlDataset

# Writes one JSON record per run() call into $SEEN_DIR: the key values, the context, the rows.
TWO_ARGUMENT_SCRIPT = """
    import json, os

    def run(mini_batch, mini_batch_context):
        context = mini_batch_context
        is_table = hasattr(mini_batch, "columns")
        record = {
            "keys": context.partition_key_value,
            "index": context.minibatch_index,
            "dataset": {"kind": context.dataset.kind, "inputs": list(context.dataset.inputs),
                        "format": context.dataset.format},
            "ids": sorted(int(i) for i in mini_batch["id"]) if is_table else sorted(mini_batch),
            "key_columns": {k: sorted({str(v) for v in mini_batch[k]}) for k in context.partition_key_value}
            if is_table else {},
        }
        if str(context.partition_key_value.get("Store")) == os.environ.get("FAIL_STORE"):
            raise RuntimeError("this store fails")
        name = f"{context.minibatch_index}-{os.getpid()}.json"
        with open(os.path.join(os.environ["SEEN_DIR"], name), "w") as f:
            json.dump(record, f)
        return [str(i) for i in record["ids"]]
"""

ONE_ARGUMENT_SCRIPT = """
    def run(mini_batch):
        return [f"{s}/{b}/{i}" for s, b, i in zip(mini_batch["Store"], mini_batch["Brand"], mini_batch["id"])]
"""


def sales(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """Rows of three stores and two brands, shuffled so every group is spread over the table."""
    frame = pd.DataFrame(
        {
            "id": range(rows),
            "Store": [(i * 7) % 3 + 1 for i in range(rows)],
            "Brand": ["a" if (i * 5) % 4 < 2 else "b" for i in range(rows)],
            "sales": [float(i % 13) for i in range(rows)],
        }
    )
    return frame.sample(frac=1, random_state=seed).reset_index(drop=True)


def expected_groups(frame: pd.DataFrame, keys: list[str]) -> dict[tuple[Any, ...], list[int]]:
    return {
        (k if isinstance(k, tuple) else (k,)): sorted(group["id"].tolist())
        for k, group in frame.groupby(keys, sort=False)
    }


def write_script(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "entry.py"
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def make_spec(tmp_path: Path, script: Path, **config: Any) -> RunSpec:
    config.setdefault("error_threshold", 0)
    return RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(entry_script="entry.py", warm_workers=False, **config),
        entry_script=str(script),
    )


def run_all(dataset: Any, spec: RunSpec, **partition: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    descriptors = steps.partition(dataset, spec, **partition)
    indexes = [i for d in descriptors for i in range(d["index"], d["index"] + d["count"])]
    steps.run_mini_batches(indexes, spec)
    return descriptors, steps.aggregate(spec)


def seen(folder: Path) -> list[dict[str, Any]]:
    return sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda r: r["index"])


@pytest.fixture
def seen_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "seen"
    folder.mkdir()
    monkeypatch.setenv("SEEN_DIR", str(folder))
    return folder


def check_whole_and_alone(records: list[dict[str, Any]], groups: dict[tuple[Any, ...], list[int]], keys):
    """Each group arrived in exactly one call, with all its rows and only its rows, named by its keys."""
    assert len(records) == len(groups)
    got = {tuple(r["keys"][k] for k in keys): r for r in records}
    assert set(got) == set(groups)
    for key, ids in groups.items():
        record = got[key]
        assert record["ids"] == ids, key
        assert record["key_columns"] == {k: [str(v)] for k, v in zip(keys, key, strict=True)}
    assert [r["index"] for r in records] == list(range(len(groups)))


# --- configuration --------------------------------------------------------------------------------


def test_partition_keys_and_mini_batch_size_exclude_each_other_naming_both() -> None:
    for size in ("10", "{{ params.size }}"):
        with pytest.raises(ConfigError) as caught:
            ParallelRunConfig(entry_script="s.py", partition_keys=["Store", "Brand"], mini_batch_size=size)
        message = str(caught.value)
        assert "partition_keys=['Store', 'Brand']" in message and "mini_batch_size" in message
        assert "exclude each other" in message


@pytest.mark.parametrize("keys", ["Store", [], ["Store", "Store"], [""], [1]])
def test_bad_partition_keys_are_refused_with_an_example(keys: Any) -> None:
    with pytest.raises(ConfigError, match=r"partition_keys=.*must be a non-empty list.*\['Store', 'Brand'\]"):
        ParallelRunConfig(entry_script="s.py", partition_keys=keys)


def test_partition_keys_round_trip_through_the_header_and_take_azure_json_text() -> None:
    config = ParallelRunConfig(entry_script="s.py", partition_keys='["Store", "Brand"]')
    assert config.partition_keys == ("Store", "Brand")
    resolved = config.for_dataset(tabular=True)
    header = json.loads(json.dumps(resolved.to_header()))
    assert ParallelRunConfig.from_header(header).partition_keys == ("Store", "Brand")


def test_file_dataset_needs_a_partition_format_holding_the_keys(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, tmp_path / "entry.py", partition_keys=["Store"])
    with pytest.raises(ConfigError, match=r"needs the dataset's partition_format.*'\{Store\}/\*'"):
        steps.partition(FileDataset(path=str(tmp_path)), spec)
    with pytest.raises(ConfigError, match=r"\['Store'\] are not keys of partition_format='\{Brand\}/\*.csv'"):
        steps.partition(FileDataset(path=str(tmp_path), partition_format="{Brand}/*.csv"), spec)
    with pytest.raises(ConfigError, match="names no key"):
        FileDataset(path=str(tmp_path), partition_format="*/*.csv")


def test_a_key_that_is_no_column_fails_the_partition_naming_the_columns(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    sales(20).to_csv(tmp_path / "in" / "t.csv", index=False)
    spec = make_spec(tmp_path, tmp_path / "entry.py", partition_keys=["Stor"])
    with pytest.raises(ConfigError, match=r"\['Stor'\] are not columns of .*t.csv .*'Store'"):
        steps.partition(TabularDataset(path=str(tmp_path / "in")), spec)


# --- each kind of dataset -------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_csv_groups_spanning_files_and_pieces_arrive_whole_and_alone(
    tmp_path: Path, seen_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small scan pieces: each file is read in several pieces, and each group spans files and pieces.
    monkeypatch.setattr(key_groups, "SCAN_BYTES", 2048)
    frame = sales(900)
    (tmp_path / "in").mkdir()
    for number in range(3):
        frame.iloc[number * 300 : (number + 1) * 300].to_csv(tmp_path / "in" / f"t{number}.csv", index=False)
    spec = make_spec(tmp_path, write_script(tmp_path, TWO_ARGUMENT_SCRIPT), partition_keys=["Store", "Brand"])
    descriptors, summary = run_all(TabularDataset(path=str(tmp_path / "in")), spec)
    groups = expected_groups(frame, ["Store", "Brand"])
    assert len(descriptors) == len(groups) == 6
    records = seen(seen_dir)
    check_whole_and_alone(records, groups, ["Store", "Brand"])
    assert all(len(r["dataset"]["inputs"]) > 3 for r in records)  # pieces of all three files
    assert records[0]["dataset"]["kind"] == "TabularDataset" and records[0]["dataset"]["format"] == "csv"
    assert (summary["status"], summary["total_items"], summary["succeeded_items"]) == ("succeeded", 900, 900)
    # The report and the UI's label name each group.
    report = pd.read_csv(tmp_path / "out" / "_parallelrun" / "processed_mini_batches.csv")
    named = [json.loads(v) for v in report["partition_key_value"]]
    assert named == [r["keys"] for r in records]
    first = records[0]["keys"]
    assert descriptors[0]["label"].startswith(f"mb-000000 Store={first['Store']} Brand={first['Brand']} ")


@pytest.mark.timeout(300)
def test_parquet_groups_spanning_row_groups_and_files_arrive_whole_and_alone(
    tmp_path: Path, seen_dir: Path
) -> None:
    frame = sales(800, seed=1)
    (tmp_path / "in").mkdir()
    for number in range(2):
        part = pa.Table.from_pandas(frame.iloc[number * 400 : (number + 1) * 400], preserve_index=False)
        pq.write_table(part, tmp_path / "in" / f"t{number}.parquet", row_group_size=50)
    spec = make_spec(tmp_path, write_script(tmp_path, TWO_ARGUMENT_SCRIPT), partition_keys=["Store"])
    _, summary = run_all(TabularDataset(path=str(tmp_path / "in"), format="parquet"), spec)
    records = seen(seen_dir)
    check_whole_and_alone(records, expected_groups(frame, ["Store"]), ["Store"])
    assert records[0]["dataset"]["format"] == "parquet" and len(records[0]["dataset"]["inputs"]) == 16
    assert (summary["total_items"], summary["succeeded_items"]) == (800, 800)


@pytest.mark.timeout(300)
def test_file_dataset_groups_by_the_keys_of_its_partition_format(tmp_path: Path, seen_dir: Path) -> None:
    groups: dict[tuple[str, str], list[str]] = {}
    for store in ("s1", "s2"):
        for brand in ("a", "b", "c"):
            folder = tmp_path / "in" / store / brand
            folder.mkdir(parents=True)
            for day in range(3):
                (folder / f"day{day}.csv").write_text("x\n1\n")
                groups.setdefault((store, brand), []).append(str(folder / f"day{day}.csv"))
    (tmp_path / "in" / "readme.csv").write_text("x\n")  # not in the format: refused, reported
    spec = make_spec(tmp_path, write_script(tmp_path, TWO_ARGUMENT_SCRIPT), partition_keys=["Store", "Brand"])
    dataset = FileDataset(
        path=str(tmp_path / "in"), pattern="**/*.csv", partition_format="{Store}/{Brand}/*.csv"
    )
    _, summary = run_all(dataset, spec)
    records = seen(seen_dir)
    assert len(records) == 6
    for record in records:
        key = (record["keys"]["Store"], record["keys"]["Brand"])
        assert [Path(p).name for p in record["ids"]] == [Path(p).name for p in sorted(groups[key])]
        assert all(f"/{key[0]}/{key[1]}/" in p for p in record["ids"])
        assert record["dataset"] == {"kind": "FileDataset", "inputs": sorted(groups[key]), "format": None}
    assert (summary["total_items"], summary["succeeded_items"]) == (18, 18)
    assert [r["input"] for r in summary["refused_inputs"]] == [str(tmp_path / "in" / "readme.csv")]
    assert "does not match partition_format" in summary["refused_inputs"][0]["reason"]


@pytest.mark.timeout(300)
def test_sql_dataset_groups_by_columns(tmp_path: Path, seen_dir: Path) -> None:
    frame = sales(300, seed=2)
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        frame.to_sql("sales", connection, index=False)
    spec = make_spec(tmp_path, write_script(tmp_path, TWO_ARGUMENT_SCRIPT), partition_keys=["Brand"])
    _, summary = run_all(SqlDataset(url=f"sqlite:///{database}", table="sales", key="id"), spec)
    check_whole_and_alone(seen(seen_dir), expected_groups(frame, ["Brand"]), ["Brand"])
    assert (summary["total_items"], summary["succeeded_items"]) == (300, 300)


# --- the script's signature -----------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_one_argument_script_gets_each_group_too(tmp_path: Path) -> None:
    frame = sales(120)
    (tmp_path / "in").mkdir()
    frame.to_csv(tmp_path / "in" / "t.csv", index=False)
    spec = make_spec(tmp_path, write_script(tmp_path, ONE_ARGUMENT_SCRIPT), partition_keys=["Store", "Brand"])
    _, summary = run_all(TabularDataset(path=str(tmp_path / "in")), spec)
    assert summary["succeeded_items"] == 120
    lines = (tmp_path / "out" / "parallel_run_step.txt").read_text().split()
    # The merged output comes group after group: each group's lines are together, and all its rows.
    keys = [line.rsplit("/", 1)[0] for line in lines]
    runs = [key for key, _ in itertools.groupby(keys)]
    assert len(runs) == len(set(runs)) == 6
    for (store, brand), ids in expected_groups(frame, ["Store", "Brand"]).items():
        assert (
            sorted(int(line.rsplit("/", 1)[1]) for line in lines if line.startswith(f"{store}/{brand}/"))
            == ids
        )


@pytest.mark.timeout(300)
def test_a_two_argument_script_without_partition_keys_gets_an_empty_key_and_its_index(
    tmp_path: Path, seen_dir: Path
) -> None:
    (tmp_path / "in").mkdir()
    sales(60).to_csv(tmp_path / "in" / "t.csv", index=False)
    spec = make_spec(tmp_path, write_script(tmp_path, TWO_ARGUMENT_SCRIPT), mini_batch_size="20 rows")
    run_all(TabularDataset(path=str(tmp_path / "in")), spec)
    records = seen(seen_dir)
    assert [(r["keys"], r["index"], len(r["ids"])) for r in records] == [
        ({}, 0, 20),
        ({}, 1, 20),
        ({}, 2, 20),
    ]
    assert records[1]["dataset"]["inputs"] == [f"{tmp_path / 'in' / 't.csv'}[bytes={_range(tmp_path, 1)}]"]


def _range(tmp_path: Path, index: int) -> str:
    manifest = (
        (tmp_path / "out" / "_parallelrun" / "manifest" / "shard-000000.jsonl").read_text().splitlines()
    )
    piece = json.loads(manifest[index])["piece"]
    return f"{piece['start']}:{piece['end']}"


# --- resume and counting --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_reruns_only_the_groups_that_failed(
    tmp_path: Path, seen_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = sales(300)
    (tmp_path / "in").mkdir()
    frame.to_csv(tmp_path / "in" / "t.csv", index=False)
    script = write_script(tmp_path, TWO_ARGUMENT_SCRIPT)
    # Failures tolerated: the first run goes through every group, and two fail.
    spec = make_spec(tmp_path, script, partition_keys=["Store", "Brand"], run_max_try=1, error_threshold=-1)
    dataset = TabularDataset(path=str(tmp_path / "in"))
    monkeypatch.setenv("FAIL_STORE", "2")
    _, summary = run_all(dataset, spec)
    assert (summary["failed_mini_batches"], summary["failed_items"]) == (2, len(frame[frame.Store == 2]))
    first = {json.dumps(r["keys"], sort_keys=True) for r in seen(seen_dir)}
    assert len(first) == 4 and all('"Store": 2' not in k for k in first)
    for path in seen_dir.iterdir():
        path.unlink()
    monkeypatch.delenv("FAIL_STORE")
    _, summary = run_all(dataset, spec, resume=True)
    again = seen(seen_dir)
    assert sorted(r["keys"]["Brand"] for r in again) == ["a", "b"] and {
        r["keys"]["Store"] for r in again
    } == {2}
    assert (summary["status"], summary["reused_mini_batches"], summary["succeeded_items"]) == (
        "succeeded",
        4,
        300,
    )
    groups = expected_groups(frame, ["Store", "Brand"])
    assert all(r["ids"] == groups[(2, r["keys"]["Brand"])] for r in again)


def test_a_resume_with_other_partition_keys_starts_clean(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    sales(30).to_csv(tmp_path / "in" / "t.csv", index=False)
    dataset = TabularDataset(path=str(tmp_path / "in"))
    steps.partition(dataset, make_spec(tmp_path, tmp_path / "entry.py", partition_keys=["Store"]))
    steps.partition(
        dataset, make_spec(tmp_path, tmp_path / "entry.py", partition_keys=["Brand"]), resume=True
    )
    header = json.loads((tmp_path / "out" / "_parallelrun" / "manifest.json").read_text())
    assert header["resumed"] is False and "partition_keys changed" in header["resume_note"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_remote_pieces_of_a_group_are_staged_apart_even_with_equal_names(
    tmp_path: Path, seen_dir: Path, fmt: str
) -> None:
    import fsspec

    # Two folders hold a file of the same name: the staged copies of their pieces must not collide.
    fs, root = fsspec.filesystem("memory"), f"/keys-{tmp_path.name}"
    frame = sales(200, seed=3)
    for number, folder in enumerate(("a", "b")):
        part = frame.iloc[number * 100 : (number + 1) * 100]
        with fs.open(f"{root}/{folder}/t.{fmt}", "wb") as f:
            if fmt == "csv":
                f.write(part.to_csv(index=False).encode())
            else:
                pq.write_table(pa.Table.from_pandas(part, preserve_index=False), f, row_group_size=30)
    spec = make_spec(tmp_path, write_script(tmp_path, TWO_ARGUMENT_SCRIPT), partition_keys=["Store"])
    try:
        _, summary = run_all(TabularDataset(path=f"memory://{root}", format=fmt), spec)
    finally:
        fs.rm(root, recursive=True)
    check_whole_and_alone(seen(seen_dir), expected_groups(frame, ["Store"]), ["Store"])
    assert summary["succeeded_items"] == 200
