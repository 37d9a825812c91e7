"""A retry clock for tests: its sleeps pass at once, so a retry budget is spent without waiting it out."""

from __future__ import annotations

from airflow_parallelrun.core.storage import retries


class VirtualClock(retries.RetryClock):
    """Time that moves only when the retries sleep; every sleep is recorded."""

    def __init__(self) -> None:
        self.time = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds
