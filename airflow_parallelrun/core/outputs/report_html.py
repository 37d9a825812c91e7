"""Write ``_parallelrun/report.html``: one self-contained page a person reads instead of the JSON.

The page holds the summary, a timeline of mini-batches per worker, throughput over time, the
distribution of mini-batch durations with the slowest named, failures by category with their
first messages, and resource use per worker. Everything is inline (SVG figures, one style
block, no script, no link to anything), so the file opens anywhere without a network.

Drawing it must never fail a run: a figure that cannot be drawn leaves a note in its place,
and a page that cannot be written is logged while the aggregate goes on (see docs/report.md).
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.outputs import report_data as data
from airflow_parallelrun.core.outputs import report_figures as figures
from airflow_parallelrun.core.outputs.perf_files import MAX_PERF_FILES

if TYPE_CHECKING:
    from airflow_parallelrun.core.outputs.status import BatchStatus
    from airflow_parallelrun.core.storage.manifest import RunLayout

log = logging.getLogger(__name__)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}td.n{text-align:right}.note{color:#666;font-size:.9em}
.failed{color:#b00}.succeeded{color:#070}svg{max-width:100%;height:auto}
"""

MIB = 2**20

#: The counts shown first in the summary table, in this order.
COUNTS = (
    "total_mini_batches",
    "succeeded_mini_batches",
    "failed_mini_batches",
    "skipped_mini_batches",
    "reused_mini_batches",
    "total_items",
    "succeeded_items",
    "failed_items",
    "skipped_items",
    "returned_items",
)


def write_html_report(
    layout: RunLayout,
    statuses: Sequence[BatchStatus],
    summary: dict[str, Any],
    samples_of: Callable[[], tuple[list[dict[str, Any]], int]],
) -> bool:
    """Write the report page and name it in ``summary`` (``report_html``); return whether it was written.

    ``samples_of`` returns the run's resource samples and their files' count (``node_samples``,
    this node's pools' last ones published first), or raises what gathering them raised.
    Log, never raise, when anything fails: the summary is then written without ``report_html``.
    """
    began = time.perf_counter()
    try:
        samples, files = samples_of()
        page = render_html(statuses, summary, samples, files)
        layout.output.write_bytes(layout.report_html, page.encode())
    except Exception:
        log.exception(
            "could not write the report %s; the run's outputs and summary are not affected",
            layout.output.url_of(layout.report_html),
        )
        return False
    summary["report_html"] = layout.output.url_of(layout.report_html)
    log.info(
        "wrote the report %s (%d bytes) in %.2f s",
        layout.output.url_of(layout.report_html),
        len(page),
        time.perf_counter() - began,
    )
    return True


def render_html(
    statuses: Sequence[BatchStatus], summary: dict[str, Any], samples: list[dict[str, Any]], files: int
) -> str:
    """Return the page for ``statuses``, ``summary`` and the resource ``samples`` (from ``files`` files)."""
    e = html.escape
    timeline = data.timeline(statuses)
    slowest = data.slowest(statuses)
    status = str(summary.get("status", ""))
    parts = [
        f"<h1>Parallel run <span class='{e(status)}'>{e(status)}</span></h1>",
        f"<p>run {e(str(summary.get('run_id')))}, output {e(str(summary.get('output')))}</p>",
        "<h2>Summary</h2>",
        _summary_table(summary),
        "<h2>Timeline of mini-batches per worker</h2>",
        _timeline_note(timeline),
        _drawn(figures.timeline_svg, timeline) if timeline.bars else "<p class=note>nothing ran</p>",
        "<h2>Throughput</h2>",
        _drawn(figures.throughput_svg, data.throughput(statuses, timeline.origin)) if timeline.bars else "",
        "<h2>Mini-batch durations</h2>",
        _drawn(figures.durations_svg, [data.duration(s) for s in statuses if s.tries], _named(slowest))
        if slowest
        else "<p class=note>no mini-batch ran</p>",
        "<h3>Slowest mini-batches</h3>",
        _slowest_table(slowest),
        "<h2>Failures by category</h2>",
        _failures_table(data.failures(statuses)),
        "<h2>Resource use per worker</h2>",
        _resources(samples, files, timeline.origin),
    ]
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>Parallel run {e(str(summary.get('run_id')))}: {e(status)}</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


def _drawn(draw: Callable[..., str], *args: Any) -> str:
    """Return a figure's SVG, or a note saying why it could not be drawn."""
    try:
        return draw(*args)
    except Exception as exc:
        log.warning("could not draw a figure of the report (%s)", draw.__name__, exc_info=True)
        why = html.escape(f"{type(exc).__name__}: {exc}")
        return f"<p class=note>this figure could not be drawn: {why}</p>"


def _named(slowest: Sequence[BatchStatus]) -> list[tuple[str, float]]:
    return [(s.id, data.duration(s)) for s in slowest]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return f"<td class=n>{value}</td>" if numeric else f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary_table(summary: dict[str, Any]) -> str:
    """Show the counts first, then every other field of ``summary.json`` (nested ones as JSON)."""
    rows: list[tuple[str, Any]] = [(k, summary[k]) for k in COUNTS if k in summary]
    for key, value in summary.items():
        if key not in COUNTS and key != "first_errors":
            shown = value if isinstance(value, (int, float, str)) else json.dumps(value, default=str)[:2000]
            rows.append((key, shown))
    return _table(("field", "value"), rows)


def _timeline_note(timeline: data.Timeline) -> str:
    notes = []
    if timeline.binned:
        notes.append(f"more than {data.MAX_BARS} mini-batches: each lane shows its busy time, binned")
    if timeline.untimed:
        notes.append(f"{timeline.untimed} mini-batches have no times (not run, or run by an older version)")
    if len(timeline.lanes) and timeline.lanes[0].rsplit(" ", 2)[-2] == "slot":
        notes.append(f"more than {data.MAX_LANES} worker processes: lanes are slots of each node")
    return "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes)


def _slowest_table(slowest: Sequence[BatchStatus]) -> str:
    rows = [
        (s.id, round(data.duration(s), 3), round(s.seconds_run, 3), s.tries, s.status, _inputs(s))
        for s in slowest
    ]
    return _table(("mini-batch", "seconds", "seconds in run()", "tries", "status", "inputs"), rows)


def _inputs(s: BatchStatus) -> str:
    return ";".join(s.inputs)[:200]


def _failures_table(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return "<p>No mini-batch failed and no item went missing.</p>"
    rows = [(f["category"], f["count"], f["first_id"], f["first_message"][:1000]) for f in failures]
    return _table(("category", "mini-batches", "first", "first message"), rows)


def _resources(samples: list[dict[str, Any]], files: int, origin: float) -> str:
    if not samples:
        return "<p class=note>no resource samples (resource_monitor_interval=0, or the run was too short)</p>"
    lines = data.resource_lines(samples, origin or min(r["time"] for r in samples if r["time"] is not None))
    note = "CPU %: of one core for a worker, of all its cores for a node. "
    note += "Memory: resident for a worker, in use for a node."
    if files > MAX_PERF_FILES:
        note += f" {files} samples files; the first {MAX_PERF_FILES} are shown."
    peaks = [
        (name, max(r["cpu_percent"] or 0 for r in rows), round(max(r["rss_bytes"] or 0 for r in rows) / MIB))
        for name, rows in lines.items()
    ]
    return (
        f"<p class=note>{html.escape(note)}</p>"
        + _drawn(figures.resources_svg, lines)
        + _table(("worker", "peak CPU %", "peak resident MiB"), peaks)
    )
