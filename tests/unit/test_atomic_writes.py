"""Every write of the run's storage is atomic and durable (core/storage/atomic.py).

Local disk: the bytes are fsynced before the rename that publishes them, and the folder after
it, so that after a power loss a status never claims a part that is empty. A filesystem with no
atomic put (sftp, ftp, webdav...) gets write-then-move: a write that breaks off midway leaves
nothing under the final name. The fsync order is recorded by wrapping ``os.fsync`` and ``os.replace``; the
non-atomic filesystem is fsspec's real ``DirFileSystem`` over a local folder, whose writes go
straight to the named file, with a switch that cuts a write off halfway.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from airflow_parallelrun.core.errors import StorageError
from airflow_parallelrun.core.storage import location, retries
from airflow_parallelrun.core.storage.location import Location, has_atomic_put, write_file, write_local_file
from tests.unit.virtual_clock import VirtualClock


class HalfWriteFileSystem(DirFileSystem):
    """A folder reached as a remote filesystem without an atomic put; ``broken`` cuts writes off halfway."""

    protocol = "halfwrite"
    broken: ClassVar[bool] = False

    def _half(self, path: str, data: bytes) -> None:
        with self.fs.open(self._join(path), "wb") as f:
            f.write(data[: len(data) // 2])
        raise ConnectionResetError(f"halfwrite: the connection dropped while writing {path}")

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> None:
        if type(self).broken:
            self._half(path, value)
        super().pipe_file(path, value, *args, **kwargs)

    def put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> None:
        if type(self).broken:
            self._half(rpath, Path(lpath).read_bytes())
        super().put_file(lpath, rpath, *args, **kwargs)


fsspec.register_implementation("halfwrite", HalfWriteFileSystem, clobber=True)


@pytest.fixture
def halfwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Location, Path]:
    monkeypatch.setattr(retries, "clock", VirtualClock())
    monkeypatch.setattr(HalfWriteFileSystem, "broken", False)
    root = tmp_path / "remote"
    root.mkdir()
    loc = Location("halfwrite://out", {"path": str(root), "fs": LocalFileSystem()})
    assert not loc.is_local and not has_atomic_put(loc.fs)
    return loc, root


@pytest.fixture
def disk_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record, in order, what was fsynced (by path) and what was renamed to what."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", str(os.fstat(fd).st_ino)))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _check_durable_publish(events: list[tuple[str, str]], target: Path) -> None:
    """The temporary file is fsynced, then renamed to ``target``, then the folder is fsynced.

    Files are told apart by inode: the renamed file keeps the temporary file's.
    """
    renames = [e for e in events if e[0] == "replace" and e[1].endswith(f" -> {target}")]
    assert len(renames) == 1, events
    tmp = renames[0][1].split(" -> ")[0]
    at = events.index(renames[0])
    fsynced_before, fsynced_after = events[:at], events[at:]
    assert ("fsync", str(target.stat().st_ino)) in fsynced_before, f"not fsynced before the rename: {events}"
    assert ("fsync", str(target.parent.stat().st_ino)) in fsynced_after, f"folder not fsynced after: {events}"
    assert os.path.dirname(tmp) == str(target.parent), "the temporary file must be on the same filesystem"


def test_a_local_part_is_fsynced_before_its_rename_and_its_folder_after(tmp_path, disk_events):
    loc = Location(str(tmp_path / "out"))
    local = tmp_path / "scratch.csv"
    local.write_bytes(b"id,p\n1,0.5\n")
    part = tmp_path / "out" / "_parallelrun" / "parts" / "mb-000000.csv"

    loc.put_file(str(local), str(part))

    assert part.read_bytes() == b"id,p\n1,0.5\n"
    _check_durable_publish(disk_events, part)


def test_a_local_status_and_the_merged_output_are_written_the_same_way(tmp_path, disk_events):
    loc = Location(str(tmp_path / "out"))
    status = tmp_path / "out" / "_parallelrun" / "status" / "mb-000000.json"
    loc.write_json(str(status), {"status": "succeeded"})
    _check_durable_publish(disk_events, status)

    disk_events.clear()
    merged = tmp_path / "out" / "parallel_run_step.txt"
    with loc.writer(str(merged)) as f:
        f.write(b"a\nb\n")
    assert merged.read_bytes() == b"a\nb\n"
    _check_durable_publish(disk_events, merged)


def test_a_local_write_that_fails_leaves_the_old_content_and_no_temporary_file(tmp_path):
    loc = Location(str(tmp_path))
    target = tmp_path / "merged.txt"
    target.write_bytes(b"old\n")
    with pytest.raises(RuntimeError), loc.writer(str(target)) as f:
        f.write(b"half of the new")
        raise RuntimeError("the merge broke off")
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.txt"]


def test_an_exclusive_local_write_takes_a_free_name_only(tmp_path):
    path = str(tmp_path / "claims" / "a.json")
    assert write_local_file(path, b"first", exclusive=True)
    assert not write_local_file(path, b"second", exclusive=True)
    assert Path(path).read_bytes() == b"first"
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["a.json"]


@pytest.mark.parametrize("how", ["write_bytes", "put_file", "writer"])
def test_a_write_that_breaks_off_midway_on_a_non_atomic_filesystem_leaves_no_partial_file(
    halfwrite, tmp_path, how
):
    loc, root = halfwrite
    data = b"0123456789" * 1000
    (root / "out").mkdir()
    (root / "out" / "status.json").write_bytes(b"the old, whole content")
    HalfWriteFileSystem.broken = True

    with pytest.raises(StorageError, match=r"kept failing.*the connection dropped"):
        if how == "write_bytes":
            loc.write_bytes(loc.join("status.json"), data)
        elif how == "put_file":
            local = tmp_path / "part.bin"
            local.write_bytes(data)
            loc.put_file(str(local), loc.join("status.json"))
        else:
            with loc.writer(loc.join("status.json")) as f:
                f.write(data)

    assert (root / "out" / "status.json").read_bytes() == b"the old, whole content"
    assert sorted(p.name for p in (root / "out").iterdir()) == ["status.json"], "a temporary file was left"

    HalfWriteFileSystem.broken = False
    loc.write_bytes(loc.join("status.json"), data)
    assert (root / "out" / "status.json").read_bytes() == data
    assert sorted(p.name for p in (root / "out").iterdir()) == ["status.json"]


def test_object_stores_and_memory_publish_in_one_put_without_a_temporary_name(tmp_path):
    memory = fsspec.filesystem("memory")
    write_file(memory, "/h2-atomic/a.txt", b"whole")
    assert memory.cat_file("/h2-atomic/a.txt") == b"whole"
    assert memory.ls("/h2-atomic", detail=False) == ["/h2-atomic/a.txt"]
    memory.rm("/h2-atomic", recursive=True)

    class S3Like:
        protocol = ("s3", "s3a")

    assert has_atomic_put(S3Like()) and not has_atomic_put(
        HalfWriteFileSystem(path=str(tmp_path), fs=LocalFileSystem())
    )
    assert {"s3", "gs", "abfs", "az"} <= location.ATOMIC_PUT_PROTOCOLS


def test_the_package_holds_one_copy_of_the_write_fsync_rename_sequence():
    # storage/atomic.py is the one place that fsyncs and renames; every other writer calls it.
    package = Path(location.__file__).parents[2]
    found = sorted(
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(call in line for call in ("os.replace(", "os.rename(", "os.fsync(", "os.link("))
    )
    assert found and all(entry.startswith("core/storage/atomic.py:") for entry in found), found
