"""Draw the report's figures with matplotlib, each as inline SVG text (no script, no image file).

matplotlib is imported here only, when a report is drawn: the run tasks and the workers never
pay for it. Figures are made with ``matplotlib.figure.Figure`` (no pyplot, no global state),
with text kept as text (``svg.fonttype: none``), which keeps them small and searchable.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from airflow_parallelrun.core.outputs.report_data import Timeline

OK_COLOUR, FAILED_COLOUR = "#4c9f70", "#d1495b"


def _figure(height: float, rows: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    # Fixed margins: a layout engine (constrained, tight) would cost more than the drawing.
    figure = Figure(figsize=(10, height))
    figure.subplots_adjust(left=0.17, right=0.98, top=1 - 0.25 / height, bottom=0.55 / height, hspace=0.3)
    return figure, figure.subplots(rows, 1, squeeze=False)[:, 0]


def _svg(figure: Any) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "parallelrun"}):
        figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: without the XML declaration and doctype


def timeline_svg(timeline: Timeline) -> str:
    """Draw a lane per worker with a bar per mini-batch (green succeeded, red failed)."""
    lanes = max(len(timeline.lanes), 1)
    figure, (axes,) = _figure(min(1.2 + 0.28 * lanes, 12))
    for ok, colour in ((True, OK_COLOUR), (False, FAILED_COLOUR)):
        by_lane: dict[int, list[tuple[float, float]]] = {}
        for bar in timeline.bars:
            if bar.ok is ok:
                by_lane.setdefault(bar.lane, []).append((bar.start, max(bar.seconds, 1e-3)))
        for lane, spans in by_lane.items():
            axes.broken_barh(spans, (lane - 0.4, 0.8), facecolors=colour, edgecolor="none")
    axes.set_yticks(range(len(timeline.lanes)), timeline.lanes, fontsize=7)
    axes.set_ylim(-0.6, lanes - 0.4)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the first mini-batch began")
    return _svg(figure)


def throughput_svg(series: dict[str, list[float]]) -> str:
    """Draw mini-batches and items finished per second over the run."""
    figure, (top, bottom) = _figure(4.2, rows=2)
    top.stairs(series["mini_batches"], series["time"], color="#30638e", fill=True)
    top.set_ylabel("mini-batches / s")
    bottom.stairs(series["items"], series["time"], color="#edae49", fill=True)
    bottom.set_ylabel("items / s")
    bottom.set_xlabel("seconds since the first mini-batch began")
    for axes in (top, bottom):
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    return _svg(figure)


def durations_svg(seconds: Sequence[float], slowest: Sequence[tuple[str, float]]) -> str:
    """Draw the distribution of mini-batch wall times, the slowest marked with their ids."""
    figure, (axes,) = _figure(3.2)
    axes.hist(seconds, bins=40, color="#30638e")
    axes.set_xlabel("seconds per mini-batch (wall time, staging to status)")
    axes.set_ylabel("mini-batches")
    for name, value in slowest[:3]:
        axes.axvline(value, color=FAILED_COLOUR, linewidth=0.8)
        axes.annotate(
            name,
            (value, 0.97),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
        )
    return _svg(figure)


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
    figure, axes = _figure(1.2 + 1.5 * len(panels), rows=len(panels))
    for ax, (role, column, scale, label) in zip(axes, panels, strict=True):
        for name, rows in lines.items():
            points = [
                (r["time"], r[column] / scale) for r in rows if r["role"] == role and r[column] is not None
            ]
            if points:
                ax.plot(*zip(*points, strict=True), label=name, linewidth=1)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=4, loc="upper left")
    axes[-1].set_xlabel("seconds since the first mini-batch began")
    return _svg(figure)
