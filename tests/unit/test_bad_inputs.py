"""A corpus of bad inputs, mixed among good ones, run through the real engine and real workers.

For each bad input: the run goes on, the good rows or files come out exactly once and in order,
the failed items are counted, and the status, the dead letter and ``processed_mini_batches.csv``
name the file and the cause. Every run has ``error_threshold=-1`` so that the aggregate returns
its summary instead of raising, and the counts can be read.

What each bad input does (decided here, and in ``core/inputs/reading.py``):

- zero-byte csv: its mini-batch fails (no header line), with the 0 items it holds. A zero-byte
  jsonl file is an empty table: a succeeded mini-batch of 0 items, run() is not called. A
  zero-byte parquet file is a truncated one.
- truncated parquet: one whole-file mini-batch fails naming the file; how many items it held is
  unknown (its row count is in the lost footer), and the status and the summary say so.
- csv rows whose field count differs from the header's: only those rows fail; the worker
  passes the other rows of the piece to run() and reports the rejected rows by line number.
- non-UTF-8 text, binary data named .csv: the piece fails, with the offset of the first bad
  byte (or NUL byte); every line of the piece counts as a failed item.
- a file deleted between listing and reading, a file that may not be read: the mini-batch
  fails at once (no tries spent) naming the file and the cause; a table piece's items are then
  unknown (a FileDataset's are its files).
- an image that does not decode: the entry script's run() raises, so its whole mini-batch
  fails after its tries, with the script's own message naming the file (as Azure counts).
- one enormous row: read whole by the piece where it starts; the byte ranges inside it read
  only their own bytes and hold no row.
- an input that matches no file: zero mini-batches, and the run succeeds with zero items.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.errors import TableReadError
from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings
from airflow_parallelrun.core.inputs.byte_ranges import read_line_range
from airflow_parallelrun.core.inputs.datasets import Dataset, FileDataset, TabularDataset
from airflow_parallelrun.core.inputs.minibatch import MiniBatch, TabularPiece
from airflow_parallelrun.core.inputs.reading import read_table_rows
from airflow_parallelrun.core.inputs.splitting import NO_FILES_NOTE, partition_dataset
from airflow_parallelrun.core.outputs.status import BatchStatus
from airflow_parallelrun.core.sizes import MiniBatchSize
from airflow_parallelrun.core.spec import RunSpec
from airflow_parallelrun.core.storage.manifest import iter_mini_batches, read_manifest_header

# A sysctl file that is write-only: the kernel refuses to open it for reading even to root, so
# it is a real "file the worker may not read" where chmod 000 is not (the tests run as root).
WRITE_ONLY_FILE = Path("/proc/sys/vm/drop_caches")

TABLE_SCRIPT = """
    def run(mini_batch):
        if mini_batch.empty:
            return []
        return [f"{row.id} {len(str(row.text))}" for row in mini_batch.itertuples()]
"""

IMAGE_SCRIPT = """
    import os

    from PIL import Image

    def run(mini_batch):
        results = []
        for path in mini_batch:
            name = os.path.basename(path)
            if os.path.getsize(path) == 0:
                results.append(f"{name} empty")
                continue
            with Image.open(path) as image:
                image.load()
                results.append(f"{name} {image.size[0]}x{image.size[1]}")
        return results
"""


@dataclass
class Outcome:
    """What a whole run left behind: statuses, summary, report rows, dead letters, merged output."""

    statuses: list[BatchStatus]
    summary: dict[str, Any]
    report: dict[str, dict[str, str]]
    dead_letters: dict[str, dict[str, Any]]
    failed_inputs: list[str]
    output: list[str]

    def of(self, name: str) -> list[BatchStatus]:
        """Return the statuses of the mini-batches reading a file whose name contains ``name``."""
        return [s for s in self.statuses if any(name in i for i in s.inputs)]


def write_script(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "entry.py"
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def run_whole(
    tmp_path: Path,
    dataset: Dataset,
    script: Path,
    *,
    before_run: Callable[[], None] | None = None,
    **config: Any,
) -> Outcome:
    """Partition, run every mini-batch through one worker, aggregate; read back what was written."""
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(entry_script="x.py", error_threshold=-1, **config),
        entry_script=str(script),
    )
    descriptors = steps.partition(dataset, spec)
    if before_run is not None:
        before_run()
    statuses = steps.run_mini_batches(range(sum(d.get("count", 1) for d in descriptors)), spec)
    summary = steps.aggregate(spec)
    state = tmp_path / "out" / "_parallelrun"
    with open(state / "processed_mini_batches.csv", newline="") as f:
        report = {row["id"]: row for row in csv.DictReader(f)}
    dead_letters = {p.stem: json.loads(p.read_text()) for p in (state / "errors").glob("mb-*.json")}
    merged = tmp_path / "out" / "parallel_run_step.txt"
    return Outcome(
        statuses=statuses,
        summary=summary,
        report=report,
        dead_letters=dead_letters,
        failed_inputs=(state / "errors" / "failed_inputs.txt").read_text().splitlines(),
        output=merged.read_text().splitlines() if merged.exists() else [],
    )


def assert_failed_naming(outcome: Outcome, status: BatchStatus, *needles: str) -> None:
    """Check that a failed mini-batch names its file and cause in its status, dead letter and report."""
    assert status.status == "failed", status
    letter = outcome.dead_letters[status.id]
    row = outcome.report[status.id]
    assert letter["status"] == row["status"] == "failed"
    assert letter["inputs"] == status.inputs
    assert letter["items_failed"] == int(row["items_failed"]) == status.items_failed
    for needle in needles:
        assert needle in status.error_message, (needle, status.error_message)
        assert needle in letter["error_message"]
        assert needle in row["error_message"]
    assert all(i in outcome.failed_inputs for i in status.inputs)


def good_csv(path: Path, ids: range) -> list[str]:
    """Write a csv of ``ids`` and return the output lines the table script makes of it."""
    texts = [f"text of {i}, quoted" if i % 3 else f"row {i}" for i in ids]
    pd.DataFrame({"id": list(ids), "text": texts}).to_csv(path, index=False)
    return [f"{i} {len(t)}" for i, t in zip(ids, texts, strict=True)]


# --- a csv corpus --------------------------------------------------------------------------------


def test_a_csv_corpus_fails_only_its_bad_pieces_and_rows(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = good_csv(folder / "a_good.csv", range(0, 60))
    (folder / "b_empty.csv").write_bytes(b"")
    # Rows at lines 4 and 9 have a field too many, the row at line 12 one too few.
    ragged_lines = ["id,text"]
    for i in range(100, 115):
        line = len(ragged_lines) + 1
        ragged_lines.append(f"{i},x{i},extra" if line in (4, 9) else f"{i}" if line == 12 else f"{i},x{i}")
    (folder / "c_ragged.csv").write_text("\n".join(ragged_lines) + "\n")
    expected += [
        f"{line.split(',')[0]} 4" for n, line in enumerate(ragged_lines[1:], 2) if n not in (4, 9, 12)
    ]
    latin1 = "id,text\n200,plain\n201,café crème\n202,plain\n".encode("latin-1")
    (folder / "d_latin1.csv").write_bytes(latin1)
    rng = random.Random(7)
    # PNG's signature holds line breaks, so the garbage has a "header" and two "rows".
    garbage = b"\x89PNG\r\n\x1a\n" + rng.randbytes(300).replace(b"\n", b"\x01") + b"\x00" + rng.randbytes(90)
    garbage = garbage[:8] + garbage[8:].replace(b"\n", b"\x02")
    (folder / "e_garbage.csv").write_bytes(garbage)
    gone = folder / "f_gone.csv"
    good_csv(gone, range(300, 310))
    expected += good_csv(folder / "g_good.csv", range(400, 470))

    outcome = run_whole(
        tmp_path,
        TabularDataset(path=str(folder)),
        write_script(tmp_path, TABLE_SCRIPT),
        mini_batch_size="1KB",
        before_run=gone.unlink,  # listed and partitioned, gone before any worker reads it
    )

    # The run went on: every mini-batch ran, and the good rows came out once each, in order.
    assert len(outcome.statuses) == outcome.summary["total_mini_batches"] > 7
    assert outcome.output == expected
    assert outcome.summary["status"] == "succeeded"

    (empty,) = outcome.of("b_empty.csv")
    assert_failed_naming(outcome, empty, str(folder / "b_empty.csv"), "the file is empty", "header")
    assert (empty.items_failed, empty.tries, empty.error_category) == (0, 1, "input")
    assert not empty.items_unknown, "an empty file holds no row: 0 is its count, not a guess"

    (latin,) = outcome.of("d_latin1.csv")
    offset = latin1.index(b"\xe9")
    assert_failed_naming(
        outcome, latin, str(folder / "d_latin1.csv"), f"not UTF-8 text: byte 0xe9 at byte {offset}"
    )
    assert (latin.items_failed, latin.tries) == (3, 1)

    (binary,) = outcome.of("e_garbage.csv")
    nul = garbage.index(b"\x00")
    assert_failed_naming(
        outcome, binary, str(folder / "e_garbage.csv"), f"a NUL byte at byte {nul}", "binary"
    )
    assert binary.items_failed == 2

    (vanished,) = outcome.of("f_gone.csv")
    assert_failed_naming(outcome, vanished, str(gone), "the file is gone")
    assert (vanished.items_total, vanished.items_failed, vanished.tries) == (0, 0, 1)
    assert vanished.items_unknown and outcome.dead_letters[vanished.id]["items_unknown"] is True

    # The ragged rows, and only they, count as failed; the rest of their piece succeeded.
    ragged = outcome.of("c_ragged.csv")
    assert all(s.succeeded for s in ragged)
    assert sum(s.items_failed for s in ragged) == 3
    assert sum(s.items_total for s in ragged) == 15
    assert all(outcome.dead_letters[s.id]["items_failed"] == s.items_failed for s in ragged if s.items_failed)

    for name in ("a_good.csv", "g_good.csv"):
        assert all(s.succeeded and not s.items_failed and s.tries == 1 for s in outcome.of(name))
    assert outcome.summary["failed_mini_batches"] == 4
    assert outcome.summary["failed_items"] == 0 + 3 + 3 + 2  # and the items of the gone file, unknown
    assert outcome.summary["mini_batches_with_unknown_items"] == 1
    assert outcome.summary["succeeded_items"] == len(expected)


def test_rejected_csv_rows_are_reported_by_the_worker_with_their_line_numbers(tmp_path):
    """The worker's reply counts the rejected rows apart and names their lines in the file."""
    lines = ["id,text"] + [f"{i},t{i}" for i in range(1, 41)]
    lines[29] = "29,t29,extra"  # line 30
    lines[34] = "34"  # line 35
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    data = path.read_bytes()
    start = data.index(b"\n24,t24\n") + 1  # a piece from line 25 to the end: not the file's start
    pieces = [
        TabularPiece(str(path), "csv", "bytes", 0, start),
        TabularPiece(str(path), "csv", "bytes", start, len(data)),
    ]
    replies: list[dict[str, Any]] = []

    class RecordingWorker(WorkerProcess):
        def _receive(self, timeout: float | None) -> dict[str, Any] | None:
            reply = super()._receive(timeout)
            replies.append(reply or {})
            return reply

    worker = RecordingWorker(WorkerSettings(entry_script=str(write_script(tmp_path, TABLE_SCRIPT))))
    worker.start()
    try:
        parts = []
        for index, piece in enumerate(pieces):
            part = tmp_path / f"part-{index}.txt"
            result = worker.run(MiniBatch(index=index, kind="tabular", piece=piece), str(part), "text", 30)
            assert result.ok, result
            parts.append(part.read_text().splitlines())
    finally:
        worker.shutdown()

    first, second = (r for r in replies if "returned" in r)
    assert first == {"ok": True, "items": 23, "returned": 23, "run_seconds": first["run_seconds"]}
    started = [r for r in replies if r.get("event") == "started"]
    assert [r["items"] for r in started] == [23, 17]
    assert second["items"] == 17 and second["returned"] == 15
    assert second["rejected"] == 2
    assert second["rejected_lines"] == [30, 35]
    assert second["category"] == "rejected_rows"
    assert second["message"].startswith(f"{path}: 2 rows rejected")
    assert "line 30 (3 fields)" in second["message"] and "line 35 (1 field)" in second["message"]
    # run() saw only the good rows.
    assert [line.split()[0] for line in parts[0] + parts[1]] == [
        str(i) for i in range(1, 41) if i not in (29, 34)
    ]


@pytest.mark.parametrize(
    ("text", "ids", "rejected_lines"),
    [
        ("id,text\n1,a\n2,b,x\n3,c\n", [1, 3], [3]),  # pandas raises on a long row
        ("id,text\n1,a\n2\n3,c\n", [1, 3], [3]),  # pandas pads a short row with NaN
        ("id,text\n1,a,x\n2,b\n3,c\n", [2, 3], [2]),  # pandas makes a long first row an index
        ("id,text\n1,a,x\n2,b,y\n", None, [2, 3]),  # no row is left: the piece fails
        ('id,text\n1,a\n\n   \n2,\n3,"c,d"\n', [1, 2, 3], []),  # blank, empty field, quoted comma
        ("id\ttext\n1\ta\n2\n3\tc\r\n", [1, 3], [3]),
    ],
    ids=["long", "short", "long-first", "all", "not-ragged", "tsv"],
)
def test_which_rows_are_rejected(tmp_path, text, ids, rejected_lines):
    path = tmp_path / ("t.tsv" if "\t" in text else "t.csv")
    path.write_text(text, newline="")
    piece = TabularPiece(str(path), path.suffix[1:], "bytes", 0, len(text))
    if ids is None:
        with pytest.raises(TableReadError, match="no row is left: check the header line") as info:
            read_table_rows(piece)
        assert info.value.items == 2
        return
    rows = read_table_rows(piece)
    assert rows.frame["id"].tolist() == ids
    assert (rows.rejected, rows.rejected_lines) == (len(rejected_lines), rejected_lines)
    assert list(rows.frame.columns) == ["id", "text"]


def test_ragged_rows_are_counted_as_failed_items_by_the_engine(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "t.csv").write_text("id,text\n1,a\n2,b,c\n3,c\n4\n5,e\n")
    outcome = run_whole(tmp_path, TabularDataset(path=str(folder)), write_script(tmp_path, TABLE_SCRIPT))
    (status,) = outcome.statuses
    assert status.succeeded
    assert (status.items_total, status.items_succeeded, status.items_failed) == (5, 3, 2)
    assert outcome.output == ["1 1", "3 1", "5 1"]
    letter = outcome.dead_letters[status.id]
    assert letter["inputs"] == status.inputs and letter["items_failed"] == 2
    assert outcome.summary["failed_items"] == 2


def test_ragged_rows_are_named_by_line_in_the_dead_letter(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "t.csv").write_text("id,text\n1,a\n2,b,c\n3,c\n4\n5,e\n")
    outcome = run_whole(tmp_path, TabularDataset(path=str(folder)), write_script(tmp_path, TABLE_SCRIPT))
    (status,) = outcome.statuses
    letter = outcome.dead_letters[status.id]
    assert letter["error_category"] == "rejected_rows"
    assert "line 3 (3 fields)" in letter["error_message"] and "line 5 (1 field)" in letter["error_message"]


# --- parquet and jsonl ---------------------------------------------------------------------------


def write_parquet(path: Path, ids: range) -> list[str]:
    texts = [f"p{i}" for i in ids]
    pq.write_table(pa.table({"id": list(ids), "text": texts}), path, row_group_size=10)
    return [f"{i} {len(t)}" for i, t in zip(ids, texts, strict=True)]


def test_truncated_and_zero_byte_parquet_fail_whole_naming_the_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = write_parquet(folder / "a_good.parquet", range(0, 30))
    write_parquet(folder / "b_truncated.parquet", range(100, 130))
    truncated = folder / "b_truncated.parquet"
    truncated.write_bytes(truncated.read_bytes()[:-30])
    (folder / "c_zero.parquet").write_bytes(b"")
    expected += write_parquet(folder / "d_good.parquet", range(200, 230))

    outcome = run_whole(
        tmp_path,
        TabularDataset(path=str(folder), format="parquet"),
        write_script(tmp_path, TABLE_SCRIPT),
        mini_batch_size="20 rows",
    )

    assert outcome.output == expected
    for name in ("b_truncated.parquet", "c_zero.parquet"):
        (status,) = outcome.of(name)
        assert status.inputs == [str(folder / name)], "a whole-file piece"
        assert_failed_naming(outcome, status, str(folder / name), "cannot read", "(whole file)")
        assert (status.items_failed, status.tries, status.error_category) == (0, 1, "input")
        assert status.items_unknown, "the row count was in the lost footer"
    assert outcome.summary["failed_items"] == 0
    assert outcome.summary["mini_batches_with_unknown_items"] == 2
    assert outcome.summary["succeeded_items"] == 60


def test_a_zero_byte_jsonl_file_is_an_empty_table(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"id": 1, "text": "x"}\n')
    (folder / "b.jsonl").write_bytes(b"")
    outcome = run_whole(
        tmp_path, TabularDataset(path=str(folder), format="jsonl"), write_script(tmp_path, TABLE_SCRIPT)
    )
    assert [s.status for s in outcome.statuses] == ["succeeded", "succeeded"]
    assert [s.items_total for s in outcome.statuses] == [1, 0]
    assert outcome.output == ["1 1"]
    assert outcome.summary["failed_items"] == 0


# --- one enormous row ------------------------------------------------------------------------------


class CountingReader(io.RawIOBase):
    """A file that counts the bytes read from it."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb")  # noqa: SIM115 - closed with the reader
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def readinto(self, buffer: Any) -> int:
        n = self.f.readinto(buffer)
        self.read_bytes += n or 0
        return n or 0

    def close(self) -> None:
        self.f.close()
        super().close()


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "megabytes"), [("csv", 50), ("jsonl", 12)])
def test_one_enormous_row_is_read_once_and_loses_no_neighbour(tmp_path, fmt, megabytes):
    folder = tmp_path / "in"
    folder.mkdir()
    texts = [f"short {i}" for i in range(10)]
    texts[4] = "y" * (megabytes * 1024 * 1024)
    path = folder / f"t.{fmt}"
    table = pd.DataFrame({"id": range(10), "text": texts})
    if fmt == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_json(path, orient="records", lines=True)
    size = path.stat().st_size

    # Reading every piece costs about the file once: a range inside the row reads only itself.
    batches, _ = partition_dataset(
        TabularDataset(path=str(folder), format=fmt), MiniBatchSize("bytes", 1024**2)
    )
    assert len(batches) == math.ceil(size / 1024**2)
    reader = CountingReader(path)
    with io.BufferedReader(reader, buffer_size=64 * 1024) as f:
        rows = 0
        for mb in batches:
            assert mb.piece is not None
            _, body = read_line_range(f, mb.piece.start, mb.piece.end, header=fmt == "csv")
            rows += body.count(b"\n")
    assert rows == 10
    # Before, each range inside the row read on to the row's end: some 25 times the file.
    assert reader.read_bytes < 3 * size

    outcome = run_whole(
        tmp_path,
        TabularDataset(path=str(folder), format=fmt),
        write_script(tmp_path, TABLE_SCRIPT),
        mini_batch_size="4MB",
    )
    assert outcome.output == [f"{i} {len(t)}" for i, t in enumerate(texts)]
    assert all(s.succeeded for s in outcome.statuses)
    # The first piece holds the rows up to the enormous one, whole: far more than mini_batch_size.
    # The ranges inside the row hold no row; the last one holds the rows after it.
    counts = [s.items_total for s in outcome.statuses]
    assert counts == [5] + [0] * (len(counts) - 2) + [5]
    assert outcome.summary["total_items"] == 10 and outcome.summary["failed_items"] == 0


# --- files the worker cannot read ---------------------------------------------------------------


def test_a_table_file_that_may_not_be_read_fails_its_mini_batch_naming_it(tmp_path):
    with pytest.raises(PermissionError):
        WRITE_ONLY_FILE.open("rb")  # the kernel says no, even to root
    expected = good_csv(tmp_path / "a.csv", range(0, 5)) + good_csv(tmp_path / "c.csv", range(10, 15))
    files = [str(tmp_path / "a.csv"), str(WRITE_ONLY_FILE), str(tmp_path / "c.csv")]
    outcome = run_whole(tmp_path, TabularDataset(files=files), write_script(tmp_path, TABLE_SCRIPT))
    assert outcome.output == expected
    (denied,) = outcome.of(str(WRITE_ONLY_FILE))
    assert_failed_naming(outcome, denied, str(WRITE_ONLY_FILE), "permission denied")
    assert (denied.items_failed, denied.tries, denied.error_category) == (0, 1, "input")
    assert denied.items_unknown and outcome.summary["mini_batches_with_unknown_items"] == 1
    assert [s.status for s in outcome.statuses] == ["succeeded", "failed", "succeeded"]


# --- FileDataset -----------------------------------------------------------------------------------


def write_png(path: Path, width: int) -> None:
    from PIL import Image

    Image.new("L", (width, 3), color=width).save(path)


def test_a_file_corpus_fails_the_mini_batches_of_its_bad_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_png(folder / "01.png", 1)
    (folder / "02_zero.png").write_bytes(b"")
    broken = folder / "03_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image at all" * 10)
    for name, width in [("04.png", 4), ("05_gone.png", 5), ("06.png", 6), ("07.png", 7)]:
        write_png(folder / name, width)
    gone = folder / "05_gone.png"

    outcome = run_whole(
        tmp_path,
        FileDataset(path=str(folder)),
        write_script(tmp_path, IMAGE_SCRIPT),
        mini_batch_size="2",
        run_max_try=2,
        before_run=gone.unlink,
    )

    # 01+02, 03+04, 05+06, 07: the zero-byte file is just a file, handed to run().
    assert outcome.output == ["01.png 1x3", "02_zero.png empty", "07.png 7x3"]
    first, undecodable, vanished, last = outcome.statuses
    assert first.succeeded and last.succeeded
    assert (first.items_total, first.items_succeeded) == (2, 2)

    # run() raised: Azure counts the whole mini-batch as failed, after all its tries.
    assert_failed_naming(outcome, undecodable, "cannot identify image file", str(broken))
    assert undecodable.error_category == "entry_script"
    assert (undecodable.items_failed, undecodable.tries) == (2, 2)
    assert "entry.py" in outcome.dead_letters[undecodable.id]["error_traceback"]

    # Gone since listing: found before run() is called, and no try is spent on it.
    assert_failed_naming(outcome, vanished, str(gone), "the file is gone")
    assert (vanished.items_failed, vanished.tries, vanished.error_category) == (2, 1, "input")
    assert outcome.summary["failed_items"] == 4


def test_a_file_that_may_not_be_read_fails_its_mini_batch_before_run(tmp_path):
    calls = tmp_path / "calls.txt"
    script = write_script(
        tmp_path,
        f"""
        def run(mini_batch):
            with open({str(calls)!r}, "a") as f:
                f.write("call\\n")
            return [open(p, "rb").read() for p in mini_batch]
        """,
    )
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
    files = [str(tmp_path / "a"), str(WRITE_ONLY_FILE), str(tmp_path / "b"), str(tmp_path / "c")]
    outcome = run_whole(tmp_path, FileDataset(files=files), script, mini_batch_size="2")
    denied, rest = outcome.statuses
    assert_failed_naming(outcome, denied, str(WRITE_ONLY_FILE), "permission denied", "1 of the 2 files")
    assert (denied.items_failed, denied.tries) == (2, 1)
    assert rest.succeeded and outcome.output == ["b'b'", "b'c'"]
    assert calls.read_text() == "call\n", "run() was called for the readable mini-batch only"


# --- an input that matches nothing ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["empty-folder", "pattern-matching-nothing"])
def test_an_input_that_matches_no_file_succeeds_with_zero_items(tmp_path, case):
    folder = tmp_path / "in"
    folder.mkdir()
    dataset: Dataset = FileDataset(path=str(folder))
    if case == "pattern-matching-nothing":
        (folder / "not-a-table.csv").write_text("id\n1\n")
        dataset = TabularDataset(path=str(folder), format="parquet")
    outcome = run_whole(tmp_path, dataset, write_script(tmp_path, TABLE_SCRIPT))
    assert outcome.statuses == []
    summary = outcome.summary
    assert summary["status"] == "succeeded"
    assert (summary["total_mini_batches"], summary["total_items"], summary["input_files"]) == (0, 0, 0)
    assert summary["thresholds_exceeded"] == [] and summary["first_errors"] == []
    assert outcome.output == [] and outcome.report == {} and outcome.failed_inputs == []
    spec_layout = RunSpec(str(tmp_path / "out"), ParallelRunConfig(entry_script="x.py"), "").layout()
    assert read_manifest_header(spec_layout)["note"] == NO_FILES_NOTE
    assert list(iter_mini_batches(spec_layout)) == []


def test_the_summary_says_the_input_matched_no_file(tmp_path):
    (tmp_path / "in").mkdir()
    outcome = run_whole(
        tmp_path, FileDataset(path=str(tmp_path / "in")), write_script(tmp_path, TABLE_SCRIPT)
    )
    assert outcome.summary["note"] == NO_FILES_NOTE
