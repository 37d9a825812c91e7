"""Params and templates cannot make a run read outside the input's root or write outside output_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_parallelrun.core.errors import ConfigError, InputError
from airflow_parallelrun.core.inputs.datasets import FileDataset, TabularDataset
from airflow_parallelrun.core.inputs.paths import check_path
from airflow_parallelrun.core.inputs.splitting import partition_dataset
from airflow_parallelrun.core.sizes import MiniBatchSize

TEN = MiniBatchSize("files", 10)


@pytest.mark.parametrize("pattern", ["../*.png", "a/../../*", "/etc/*", "s3://bucket/*"])
def test_a_pattern_leaving_the_input_folder_is_refused(pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"pattern=.* must be a glob relative to path, without '\.\.'"):
        FileDataset(path="/data/in", pattern=pattern)
    with pytest.raises(ConfigError, match="must be a glob relative to path"):
        TabularDataset(path="/data/in", pattern=pattern)


@pytest.mark.parametrize(
    ("rendered", "template", "message"),
    [
        ("/data/in/../../etc", "/data/in/{{ params.folder }}", "has a '..' segment"),
        ("/data/in/a\n/b", "/data/in/{{ params.folder }}", "control character"),
        ("/data/in/a\x00", None, "control character"),
        ("/etc/passwd", "/data/in/{{ params.folder }}", r"is outside '/data/in'"),
        ("/data/input-other/x", "/data/in/{{ params.folder }}", r"is outside '/data/in'"),
        ("s3://other-bucket/x", "s3://bucket/scores/{{ run_id }}", r"is outside 's3://bucket/scores'"),
    ],
)
def test_rendered_paths_that_escape_are_refused_naming_field_and_value(
    rendered: str, template: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        check_path("output_path", rendered, template)
    assert "output_path=" in str(raised.value) and repr(rendered) in str(raised.value)


@pytest.mark.parametrize(
    ("rendered", "template"),
    [
        ("/data/in/2026-11-23", "/data/in/{{ ds }}"),
        ("/anywhere/at/all", "{{ params.path }}"),
        ("s3://bucket/scores/manual__2026", "s3://bucket/scores/{{ run_id }}"),
        ("/data/a..b/c", None),
    ],
)
def test_rendered_paths_inside_their_folder_pass(rendered: str, template: str | None) -> None:
    assert check_path("output_path", rendered, template) == rendered


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/b.txt"):
        (root / name).write_text(name)
    (tmp_path / "secret.txt").write_text("secret")
    return root


def test_files_inside_the_root_are_taken_relative_or_absolute(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    dataset = FileDataset(path=str(root), files=["a.txt", str(root / "sub" / "b.txt")])
    batches, _ = partition_dataset(dataset, TEN)
    assert batches[0].files == (f"{root}/a.txt", str(root / "sub" / "b.txt"))


@pytest.mark.parametrize("entry", ["../secret.txt", "sub/../../secret.txt", "SECRET_ABSOLUTE"])
def test_files_outside_the_root_are_refused(tmp_path: Path, entry: str) -> None:
    root = _tree(tmp_path)
    entry = str(tmp_path / "secret.txt") if entry == "SECRET_ABSOLUTE" else entry
    with pytest.raises((InputError, ConfigError), match=r"outside the input folder|'\.\.' segment"):
        partition_dataset(FileDataset(path=str(root), files=[entry]), TEN)


def test_a_symlink_leading_out_of_the_input_folder_is_refused_and_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.symlink(tmp_path / "secret.txt", root / "sub" / "link_out.txt")
    os.symlink(root / "a.txt", root / "link_in.txt")
    batches, header = partition_dataset(FileDataset(path=str(root), pattern="**/*.txt"), TEN)
    taken = [f for mb in batches for f in mb.files]
    assert str(root / "sub" / "link_out.txt") not in taken
    assert str(root / "link_in.txt") in taken
    (refused,) = header["refused_inputs"]
    assert refused["input"] == str(root / "sub" / "link_out.txt")
    assert "outside the input folder" in refused["reason"]


def test_an_explicit_file_that_is_a_symlink_out_of_the_input_folder_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.symlink(tmp_path / "secret.txt", root / "sub" / "link_out.txt")
    os.symlink(tmp_path, root / "up")  # a linked folder leading out
    os.symlink(root / "a.txt", root / "link_in.txt")
    for entry in ("sub/link_out.txt", str(root / "sub" / "link_out.txt"), "up/secret.txt"):
        with pytest.raises(InputError, match="outside the input folder") as raised:
            partition_dataset(FileDataset(path=str(root), files=[entry]), TEN)
        assert repr(entry) in str(raised.value) and str(tmp_path / "secret.txt") in str(raised.value)
    # A link that stays inside the folder is a file like any other; so is any file without path=.
    batches, _ = partition_dataset(FileDataset(path=str(root), files=["link_in.txt", "a.txt"]), TEN)
    assert batches[0].files == (f"{root}/link_in.txt", f"{root}/a.txt")
    batches, _ = partition_dataset(FileDataset(files=[str(root / "sub" / "link_out.txt")]), TEN)
    assert batches[0].files == (str(root / "sub" / "link_out.txt"),)
