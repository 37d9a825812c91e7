"""An mltable input becomes the dataset its MLTable file describes: a table if it reads files, else files."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.datasets import FileDataset, TabularDataset
from airflow_parallelrun.operators.azure_mltable import mltable_dataset


def _mltable(folder: Path, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLTable").write_text(text)
    return str(folder)


@pytest.mark.parametrize(
    ("reader", "fmt"),
    [
        ("read_delimited:\n      delimiter: ','", "csv"),
        ('read_delimited:\n      delimiter: "\\t"\n      header: from_first_file', "tsv"),
        ("read_parquet: {}", "parquet"),
        ("read_json_lines:\n      encoding: utf8", "jsonl"),
    ],
)
def test_a_reading_transformation_makes_a_table_of_that_format(tmp_path: Path, reader: str, fmt: str) -> None:
    path = _mltable(tmp_path / "t", f"paths:\n  - folder: ./data\ntransformations:\n  - {reader}\n")
    assert mltable_dataset(path) == TabularDataset(path=str(tmp_path / "t" / "data"), format=fmt)


def test_without_a_reading_transformation_it_is_a_list_of_files(tmp_path: Path) -> None:
    path = _mltable(tmp_path / "f", "paths:\n  - pattern: ./images/*.png\n")
    assert mltable_dataset(path) == FileDataset(path=str(tmp_path / "f"), pattern="images/*.png")


def test_file_entries_become_files_relative_to_the_mltable_folder(tmp_path: Path) -> None:
    path = _mltable(
        tmp_path / "m",
        "paths:\n  - file: ./a.csv\n  - file: b.csv\ntransformations:\n  - read_delimited: {}\n",
    )
    assert mltable_dataset(path + "/MLTable") == TabularDataset(
        path=str(tmp_path / "m"), format="csv", files=["a.csv", "b.csv"]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "paths:\n  - file: a.csv\ntransformations:\n  - take: 10\n",
            r"transformation 'take' has no equivalent here",
        ),
        (
            "paths:\n  - file: a.csv\ntransformations:\n  - read_delimited:\n      delimiter: ';'\n",
            r"read_delimited delimiter=';' is not supported; use ',' \(csv\) or '\\t' \(tsv\)",
        ),
        (
            "paths:\n  - file: a.csv\ntransformations:\n  - read_delimited:\n      header: no_header\n",
            r"read_delimited header='no_header' is not supported",
        ),
        (
            "paths:\n  - file: a.csv\ntransformations:\n  - read_delimited:\n"
            "      support_multi_line: true\n",
            r"read_delimited option\(s\) support_multi_line are not supported",
        ),
        ("paths:\n  - file: a.csv\n  - folder: ./more\n", r"must be a list of entries of one kind"),
        ("paths:\n  - folder: ./a\n  - folder: ./b\n", r"paths has 2 folder: entries; give one"),
        (
            "paths:\n  - file: wasbs://c@acct.blob.core.windows.net/a.csv\n",
            r"is not relative to the MLTable file's",
        ),
        ("paths:\n  - file: a.csv\nquery_source: x\n", r"key\(s\) query_source are not supported"),
    ],
)
def test_what_has_no_equivalent_is_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        mltable_dataset(_mltable(tmp_path / "bad", text))


def test_a_folder_without_an_mltable_file_says_what_to_map_instead(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"cannot read the MLTable file .* or to TabularDataset\(path=..., format"
    ):
        mltable_dataset(str(tmp_path))


def test_a_templated_path_cannot_be_read_at_parse_time(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"is a template, so its MLTable file cannot be read when the DAG is parsed"
    ):
        mltable_dataset("/data/{{ ds }}")
