"""The bounds that decide whether a run failed: items, mini-batches, percent of mini-batches.

Each bound is a small object with one ``check``; a run is checked against all of them, and any
one exceeded fails it. -1 or None switches a bound off, as in Azure ML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_parallelrun.core.outputs.counting import RunCounts

if TYPE_CHECKING:
    from airflow_parallelrun.core.config import ParallelRunConfig


@dataclass(frozen=True)
class ErrorThreshold:
    """Failed items over the whole run may not exceed ``limit``."""

    limit: int | None

    def check(self, counts: RunCounts) -> str | None:
        """Return why the bound is exceeded, or None.

        >>> ErrorThreshold(2).check(RunCounts(5, 1, 50, 3))
        'failed items 3 > error_threshold 2'
        >>> ErrorThreshold(-1).check(RunCounts(5, 5, 50, 50)) is None
        True
        """
        if self.limit is None or self.limit < 0 or counts.failed_items <= self.limit:
            return None
        return f"failed items {counts.failed_items} > error_threshold {self.limit}"


@dataclass(frozen=True)
class AllowedFailedCount:
    """Failed mini-batches may not exceed ``limit``."""

    limit: int | None

    def check(self, counts: RunCounts) -> str | None:
        if self.limit is None or self.limit < 0 or counts.failed_mini_batches <= self.limit:
            return None
        return f"failed mini-batches {counts.failed_mini_batches} > allowed_failed_count {self.limit}"


@dataclass(frozen=True)
class AllowedFailedPercent:
    """Failed mini-batches may not exceed ``limit`` percent of all mini-batches."""

    limit: float | None

    def check(self, counts: RunCounts) -> str | None:
        """Return why the bound is exceeded, or None.

        >>> AllowedFailedPercent(10).check(RunCounts(4, 1, 40, 10))
        'failed mini-batches 25% (1 of 4) > allowed_failed_percent 10%'
        """
        if self.limit is None or self.limit < 0 or counts.failed_percent <= self.limit:
            return None
        return (
            f"failed mini-batches {counts.failed_percent:g}% ({counts.failed_mini_batches} of "
            f"{counts.total_mini_batches}) > allowed_failed_percent {self.limit:g}%"
        )


Threshold = ErrorThreshold | AllowedFailedCount | AllowedFailedPercent


def exceeded(thresholds: list[Threshold], counts: RunCounts) -> list[str]:
    """Return every bound that ``counts`` exceed; empty when the run may succeed.

    >>> exceeded([ErrorThreshold(0), AllowedFailedCount(None)], RunCounts(2, 1, 10, 5))
    ['failed items 5 > error_threshold 0']
    """
    return [reason for t in thresholds if (reason := t.check(counts)) is not None]


def thresholds_of(config: ParallelRunConfig) -> list[Threshold]:
    """Return the bounds a configuration sets."""
    return [
        ErrorThreshold(config.error_threshold),
        AllowedFailedCount(config.allowed_failed_count),
        AllowedFailedPercent(config.allowed_failed_percent),
    ]


def any_bound(config: ParallelRunConfig) -> bool:
    """Tell whether any bound is on, so that counting failures early is worth it."""
    return any(t.limit is not None and t.limit >= 0 for t in thresholds_of(config))
