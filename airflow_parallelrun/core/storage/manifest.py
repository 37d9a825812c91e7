"""Store the list of mini-batches of a run in its storage, in shards a task reads one of.

The header (``manifest.json``) also says whose the state at the output path is: the run's
``run_key``, minted by its partition step, its ``owner`` (for Airflow: the DAG run and task),
and the ``accepted_keys`` whose records count in it (its own, and those of the runs it resumed).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from airflow_parallelrun.core.errors import ParallelRunError, RunSuperseded
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.storage.location import Location

STATE_DIR = "_parallelrun"
SHARD_SIZE = 1000


class RunLayout:
    """Where each piece of a run's state lives under its ``output_path``."""

    def __init__(self, output: Location) -> None:
        self.output = output

    def state(self, *parts: str) -> str:
        return self.output.join(STATE_DIR, *parts)

    @property
    def manifest(self) -> str:
        return self.state("manifest.json")

    def shard(self, number: int) -> str:
        return self.state("manifest", f"shard-{number:06d}.jsonl")

    def status(self, mb_id: str) -> str:
        return self.state("status", f"{mb_id}.json")

    def part(self, mb_id: str, extension: str, run_key: str | None = None) -> str:
        # Named with the run's key: no other run writing to this path can replace a part this run merges.
        key = f".{run_key[:12]}" if run_key else ""
        return self.state("parts", f"{mb_id}{key}.{extension}")

    def error(self, mb_id: str) -> str:
        return self.state("errors", f"{mb_id}.json")

    @property
    def errors(self) -> str:
        return self.state("errors")

    @property
    def failed_inputs(self) -> str:
        return self.state("errors", "failed_inputs.txt")

    @property
    def progress_dir(self) -> str:
        return self.state("progress")

    def progress(self, task_key: str) -> str:
        """Return where the run task ``task_key`` keeps its progress record (``outputs/progress.py``)."""
        return self.state("progress", f"{task_key}.json")

    @property
    def abort(self) -> str:
        return self.state("abort.json")

    @property
    def summary(self) -> str:
        return self.state("summary.json")

    @property
    def report(self) -> str:
        return self.state("processed_mini_batches.csv")

    @property
    def report_html(self) -> str:
        return self.state("report.html")


def write_manifest(layout: RunLayout, mini_batches: list[MiniBatch], header: dict[str, Any]) -> None:
    """Write every mini-batch, shard by shard, then the header that makes the manifest complete."""
    for number, start in enumerate(range(0, len(mini_batches), SHARD_SIZE)):
        lines = (json.dumps(mb.to_dict()) for mb in mini_batches[start : start + SHARD_SIZE])
        layout.output.write_bytes(layout.shard(number), ("\n".join(lines) + "\n").encode())
    layout.output.write_json(
        layout.manifest,
        {
            **header,
            "total_mini_batches": len(mini_batches),
            "shard_size": SHARD_SIZE,
            "created_at": datetime.now(UTC).isoformat(),
        },
    )


def new_run_key() -> str:
    """Return a new run key: every partition mints one, and every record of the run carries it."""
    return uuid.uuid4().hex


def accepted_keys(header: dict[str, Any]) -> frozenset[str | None]:
    """Return the run keys whose records count in the run the manifest describes.

    That is the run's own key, and those of the earlier runs a resume adopted. A manifest
    written before run keys existed accepts records without a key.
    """
    if not header.get("run_key"):
        return frozenset({None})
    return frozenset(header.get("accepted_keys") or [header["run_key"]])


def describe_owner(owner: Any) -> str:
    """Return a run's owner (the adapter's dict, e.g. its DAG run) as a reader would name it."""
    if not owner:
        return "a run started without Airflow (no owner recorded)"
    if isinstance(owner, dict):
        return ", ".join(f"{k}={v}" for k, v in owner.items())
    return str(owner)


def check_run_key(layout: RunLayout, run_key: str | None) -> dict[str, Any]:
    """Return the manifest header if it still belongs to the run ``run_key``; raise otherwise.

    ``run_key`` None means the run the manifest describes (plain core use, one run at a time).
    """
    # One read, no exists(): a task calls this before publishing each mini-batch.
    header = read_manifest_header(layout)  # raises, saying what is missing and what to do
    current = header.get("run_key")
    if run_key is None or run_key == current:
        return header
    raise RunSuperseded(
        f"the run state at {layout.output.url_of(layout.manifest)} now belongs to another run "
        f"({describe_owner(header.get('owner'))}, run key {current}), not to this run (run key "
        f"{run_key}): another run partitioned the same output_path after this one. This run publishes "
        "nothing more. Give each run its own output_path (e.g. '/data/out/{{ run_id }}'), or do not "
        "start a run at a path while another run there is still active"
    )


def read_manifest_header(layout: RunLayout) -> dict[str, Any]:
    """Return the manifest header; raise ``ParallelRunError`` saying what to do when there is none."""
    header = layout.output.read_json_if_exists(layout.manifest)  # one read, no lookup first
    if header is None:
        raise ParallelRunError(
            f"no manifest at {layout.output.url_of(layout.manifest)}: the partition task of this run has "
            "not finished, or output_path renders differently between tasks; clear the partition task"
        )
    return dict(header)


def _shard_lines(layout: RunLayout, number: int) -> list[str]:
    # A shard is small (SHARD_SIZE descriptors): one GET, not a lookup of its size first.
    return layout.output.read_small(layout.shard(number)).decode().splitlines()


def read_mini_batch(layout: RunLayout, index: int) -> MiniBatch:
    """Read one mini-batch by reading only its shard."""
    header = read_manifest_header(layout)
    size = int(header["shard_size"])
    lines = _shard_lines(layout, index // size)
    mb = MiniBatch.from_dict(json.loads(lines[index % size]))
    if mb.index != index:
        raise ParallelRunError(
            f"manifest shard is inconsistent: expected mini-batch {index}, found {mb.index}"
        )
    return mb


def read_mini_batches(
    layout: RunLayout, indexes: Iterable[int], header: dict[str, Any] | None = None
) -> Iterator[MiniBatch]:
    """Read several mini-batches, each shard once, and the header unless the caller has it."""
    header = header or read_manifest_header(layout)
    size = int(header["shard_size"])
    shard_number, lines = -1, []
    for index in indexes:
        if index // size != shard_number:
            shard_number = index // size
            lines = _shard_lines(layout, shard_number)
        mb = MiniBatch.from_dict(json.loads(lines[index % size]))
        if mb.index != index:
            raise ParallelRunError(
                f"manifest shard is inconsistent: expected mini-batch {index}, found {mb.index}"
            )
        yield mb


def iter_mini_batches(layout: RunLayout, header: dict[str, Any] | None = None) -> Iterator[MiniBatch]:
    """Yield every mini-batch in order, one shard in memory at a time."""
    header = header or read_manifest_header(layout)
    total, size = int(header["total_mini_batches"]), int(header["shard_size"])
    for number in range((total + size - 1) // size):
        for line in _shard_lines(layout, number):
            if line:
                yield MiniBatch.from_dict(json.loads(line))
