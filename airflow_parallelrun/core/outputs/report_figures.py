"""Draw the report's figures, each as inline SVG text (no script, no image file).

Drawn by :mod:`.svg_chart`, not a plotting library: the page is drawn by every run's aggregate
task, and matplotlib's import and drawing were most of its time on a small run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_parallelrun.core.outputs.report_data import Timeline
from airflow_parallelrun.core.outputs.svg_chart import LINE_COLOURS, Chart

OK_COLOUR, FAILED_COLOUR = "#4c9f70", "#d1495b"
#: Points per inch: the figures keep the sizes they had in inches.
PT = 72


def _top(values: Sequence[float]) -> float:
    """Return the top of a y axis from zero that shows ``values`` with a little room."""
    return max([*values, 0.0]) * 1.05 or 1.0


def timeline_svg(timeline: Timeline) -> str:
    """Draw a lane per worker with a bar per mini-batch (green succeeded, red failed)."""
    lanes = max(len(timeline.lanes), 1)
    end = max((bar.start + bar.seconds for bar in timeline.bars), default=1.0)
    chart = Chart("seconds since the first mini-batch began")
    height = min(1.2 + 0.28 * lanes, 12) * PT - 48
    axes = chart.panel((0, end), (-0.6, lanes - 0.4), height=height, lanes=timeline.lanes)
    for bar in timeline.bars:
        colour = OK_COLOUR if bar.ok else FAILED_COLOUR
        axes.rect(bar.start, bar.start + max(bar.seconds, 1e-3), bar.lane - 0.4, bar.lane + 0.4, colour)
    return chart.svg()


def throughput_svg(series: dict[str, list[float]]) -> str:
    """Draw mini-batches and items finished per second over the run."""
    chart = Chart("seconds since the first mini-batch began")
    edges = series["time"]
    for key, label, colour in (
        ("mini_batches", "mini-batches / s", "#30638e"),
        ("items", "items / s", "#edae49"),
    ):
        axes = chart.panel((edges[0], edges[-1]), (0, _top(series[key])), height=110, ylabel=label, grid=True)
        axes.stairs(series[key], edges, colour)
    return chart.svg()


def durations_svg(seconds: Sequence[float], slowest: Sequence[tuple[str, float]]) -> str:
    """Draw the distribution of mini-batch wall times, the slowest marked with their ids."""
    low, high = (min(seconds), max(seconds)) if seconds else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    width = (high - low) / 40
    counts = [0] * 40
    for value in seconds:
        counts[min(int((value - low) / width), 39)] += 1
    chart = Chart("seconds per mini-batch (wall time, staging to status)")
    axes = chart.panel((low, high), (0, _top(counts)), height=170, ylabel="mini-batches")
    for n, count in enumerate(counts):
        if count:
            axes.rect(low + n * width, low + (n + 1) * width, 0, count, "#30638e")
    for name, value in slowest[:3]:
        axes.vline(value, FAILED_COLOUR, name)
    return chart.svg()


def resources_svg(lines: dict[str, list[dict[str, Any]]]) -> str:
    """Draw CPU percent and memory over time: the workers' (a line each), then the nodes'."""
    gpu = any(r["gpu_memory_bytes"] for rows in lines.values() for r in rows)
    panels = [
        ("worker", "cpu_percent", 1.0, "worker CPU %"),
        ("worker", "rss_bytes", 2**20, "worker resident MiB"),
    ]
    if gpu:
        panels.append(("worker", "gpu_memory_bytes", 2**20, "worker GPU MiB"))
    panels += [("node", "cpu_percent", 1.0, "node CPU %"), ("node", "rss_bytes", 2**30, "node memory GiB")]
    times = [r["time"] for rows in lines.values() for r in rows]
    span = (min(times, default=0.0), max(times, default=1.0))
    chart = Chart("seconds since the first mini-batch began")
    for role, column, scale, label in panels:
        drawn = {
            name: [
                (r["time"], r[column] / scale) for r in rows if r["role"] == role and r[column] is not None
            ]
            for name, rows in lines.items()
        }
        top = _top([value for points in drawn.values() for _, value in points])
        axes = chart.panel(span, (0, top), height=80, ylabel=label, grid=True)
        for n, (name, points) in enumerate((name, points) for name, points in drawn.items() if points):
            axes.line(points, LINE_COLOURS[n % len(LINE_COLOURS)], name)
    return chart.svg()
