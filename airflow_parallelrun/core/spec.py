"""The run's specification: what every step needs besides the mini-batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.storage.location import Location, Storage
from airflow_parallelrun.core.storage.manifest import RunLayout

if TYPE_CHECKING:
    from airflow_parallelrun.core.sql.sink import SqlSink


@dataclass(frozen=True)
class RunSpec:
    """Everything a step needs besides the mini-batch: where, what script, which settings."""

    output_path: str
    config: ParallelRunConfig
    entry_script: str
    arguments: tuple[str, ...] = ()
    # None: the options registered for the output path (from a Connection), if any.
    storage_options: Storage | None = None
    # A SQL output with its URL (password included): in memory only, never written anywhere.
    sink: SqlSink | None = None

    def layout(self) -> RunLayout:
        return RunLayout(Location(self.output_path, self.storage_options))
