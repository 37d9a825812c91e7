"""The status record of one mini-batch, written once it has finished, succeeded or not."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SUCCEEDED = "succeeded"
FAILED = "failed"
NOT_RUN = "not_run"
SKIPPED = "skipped"


@dataclass
class BatchStatus:
    """What happened to one mini-batch: tries, item counts, timings and the last error."""

    id: str
    index: int
    status: str
    inputs: list[str] = field(default_factory=list)
    tries: int = 0
    items_total: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    items_returned: int = 0
    seconds_total: float = 0.0
    seconds_run: float = 0.0
    error_category: str = ""
    error_message: str = ""
    error_traceback: str = ""
    part: str | None = None
    run_id: str | None = None
    # The run that wrote this status (see ``manifest.accepted_keys``); None before run keys existed.
    run_key: str | None = None
    #: The input could not be read to count its items: the item counts above are 0, not known.
    items_unknown: bool = False
    #: The try of the Airflow task instance that ran it (2 and up: Airflow retried or cleared the
    #: task, e.g. after its worker died, and this mini-batch ran again).
    task_try: int = 1
    #: When the task began and finished this mini-batch (epoch seconds), on which node, and the
    #: process id of the worker that ran its last try: the report's timeline.
    started: float | None = None
    ended: float | None = None
    node: str = ""
    worker_pid: int | None = None
    #: The key group the mini-batch is (``partition_keys``), key -> value; None without keys.
    partition_key_value: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def dead_letter(self) -> dict[str, Any]:
        """Return what a user needs to re-run this mini-batch's failed inputs, and why they failed."""
        record = {
            "id": self.id,
            "status": self.status,
            "inputs": self.inputs,
            "items_total": self.items_total,
            "items_failed": self.items_failed,
            "error_category": self.error_category,
            "error_message": self.error_message,
            "error_traceback": self.error_traceback,
            "run_key": self.run_key,
        }
        if self.succeeded:
            record["missing_items"] = self.items_failed
        if self.items_unknown:
            record["items_unknown"] = True
        if self.partition_key_value is not None:
            record["partition_key_value"] = self.partition_key_value
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchStatus:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
