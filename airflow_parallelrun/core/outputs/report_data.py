"""Turn a run's statuses and resource samples into what the HTML report draws, bounded in size.

Whatever the number of mini-batches, the figures get a bounded number of shapes: a timeline of
at most ``MAX_BARS`` bars in at most ``MAX_LANES`` lanes (above, each lane's busy time is binned),
throughput and durations in bins, the ``SLOWEST`` slowest named, and at most
``MAX_RESOURCE_LINES`` workers' resource lines of at most ``MAX_POINTS`` points each. So the
report of 100,000 mini-batches costs about what the report of 2,000 does.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_parallelrun.core.outputs.status import SUCCEEDED, BatchStatus

MAX_BARS = 2000
MAX_LANES = 40
TIMELINE_BINS = 400
SLOWEST = 10
MAX_RESOURCE_LINES = 16
MAX_POINTS = 400


@dataclass
class Bar:
    lane: int
    start: float  # seconds since the run's first mini-batch began
    seconds: float
    ok: bool


@dataclass
class Timeline:
    lanes: list[str] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    binned: bool = False
    untimed: int = 0  # mini-batches without start and end times (not run, or older statuses)
    origin: float = 0.0  # epoch seconds of time 0


def duration(s: BatchStatus) -> float:
    """Return a mini-batch's wall time: from its start to its status, else its recorded total."""
    if s.started is not None and s.ended is not None:
        return max(s.ended - s.started, 0.0)
    return s.seconds_total


def timeline(statuses: Sequence[BatchStatus]) -> Timeline:
    """Return each timed mini-batch as a bar in its worker's lane (lanes packed when too many)."""
    timed = [s for s in statuses if s.started is not None and s.ended is not None]
    result = Timeline(untimed=len(statuses) - len(timed))
    if not timed:
        return result
    result.origin = min(s.started for s in timed if s.started is not None)
    workers = sorted({(s.node, s.worker_pid or 0) for s in timed})
    if len(workers) <= MAX_LANES:
        lane_of = {w: i for i, w in enumerate(workers)}
        result.lanes = [f"{node} pid {pid}" for node, pid in workers]
        lanes = [lane_of[(s.node, s.worker_pid or 0)] for s in timed]
    else:
        result.lanes, lanes = _packed_lanes(timed)
    result.bars = [
        Bar(lane, float(s.started or 0) - result.origin, duration(s), s.status == SUCCEEDED)
        for lane, s in zip(lanes, timed, strict=True)
    ]
    if len(result.bars) > MAX_BARS:
        result.bars, result.binned = _binned(result.bars), True
    return result


def _packed_lanes(timed: Sequence[BatchStatus]) -> tuple[list[str], list[int]]:
    """Give each mini-batch the first lane of its node free at its start (many short-lived workers)."""
    free_at: dict[str, list[float]] = defaultdict(list)
    lane_of: dict[tuple[str, int], int] = {}
    assigned = [0] * len(timed)
    for i in sorted(range(len(timed)), key=lambda i: timed[i].started or 0):
        s = timed[i]
        ends = free_at[s.node]
        slot = next((k for k, end in enumerate(ends) if end <= (s.started or 0)), len(ends))
        if slot == len(ends):
            ends.append(0.0)
            lane_of[(s.node, slot)] = len(lane_of)
        ends[slot] = s.ended or 0
        assigned[i] = lane_of[(s.node, slot)]
    return [f"{node} slot {k + 1}" for node, k in lane_of], assigned


def _binned(bars: list[Bar]) -> list[Bar]:
    """Merge each lane's bars into its busy stretches at ``TIMELINE_BINS`` bins (failed kept apart)."""
    width = (max(b.start + b.seconds for b in bars) or 1.0) / TIMELINE_BINS
    busy: dict[tuple[int, bool], bytearray] = defaultdict(lambda: bytearray(TIMELINE_BINS + 1))
    for b in bars:
        first, last = int(b.start / width), min(int((b.start + b.seconds) / width), TIMELINE_BINS - 1)
        busy[(b.lane, b.ok)][first : last + 1] = b"\1" * (last + 1 - first)
    merged = []
    for (lane, ok), bins in sorted(busy.items()):
        start = None
        for k, taken in enumerate(bins):  # the extra last bin is never taken: it closes a stretch
            if taken and start is None:
                start = k
            elif not taken and start is not None:
                merged.append(Bar(lane, start * width, (k - start) * width, ok))
                start = None
    return merged


def throughput(statuses: Sequence[BatchStatus], origin: float) -> dict[str, list[float]]:
    """Return mini-batches and items finished per second, in equal bins of the run's time.

    A bin per 10 mini-batches, 5 to 60 bins: a rate over too few mini-batches is all spikes.
    """
    ended = [(s.ended - origin, s.items_succeeded) for s in statuses if s.ended is not None]
    if not ended:
        return {"time": [], "mini_batches": [], "items": []}
    bins = min(max(len(ended) // 10, 5), 60)
    span = max(t for t, _ in ended) or 1.0
    width = span / bins
    counts, items = [0.0] * bins, [0.0] * bins
    for t, n in ended:
        k = min(int(t / width), bins - 1)
        counts[k] += 1
        items[k] += n
    return {
        "time": [k * width for k in range(bins + 1)],  # the bins' edges
        "mini_batches": [c / width for c in counts],
        "items": [n / width for n in items],
    }


def slowest(statuses: Sequence[BatchStatus], count: int = SLOWEST) -> list[BatchStatus]:
    return heapq.nlargest(count, (s for s in statuses if s.tries or s.started), key=duration)


def failures(statuses: Sequence[BatchStatus]) -> list[dict[str, Any]]:
    """Return each error category with its count, and its first mini-batch and message."""
    counts: Counter[str] = Counter()
    first: dict[str, BatchStatus] = {}
    for s in statuses:
        if s.error_category and (not s.succeeded or s.items_failed):
            counts[s.error_category] += 1
            first.setdefault(s.error_category, s)
    return [
        {"category": c, "count": n, "first_id": first[c].id, "first_message": first[c].error_message}
        for c, n in counts.most_common()
    ]


def resource_lines(samples: Sequence[dict[str, Any]], origin: float) -> dict[str, list[dict[str, Any]]]:
    """Return per worker and per node the CPU and memory series, thinned to ``MAX_POINTS`` points."""
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in samples:
        if row["time"] is None:
            continue
        name = f"{row['node']} node" if row["role"] == "node" else f"{row['node']} pid {row['pid']}"
        series[name].append(row)
    workers = [n for n in series if not n.endswith(" node")]
    peak = {n: max((r["rss_bytes"] or 0) for r in series[n]) for n in workers}
    kept = set(sorted(workers, key=lambda n: -peak[n])[:MAX_RESOURCE_LINES])
    lines: dict[str, list[dict[str, Any]]] = {}
    for name, rows in sorted(series.items()):
        if name.endswith(" node") or name in kept:
            rows.sort(key=lambda r: r["time"])
            step = max(1, len(rows) // MAX_POINTS)
            lines[name] = [{**r, "time": r["time"] - origin} for r in rows[::step]]
    return lines
