"""Draw the report's charts as SVG text: stacked panels with axes, ticks, bars, steps and lines.

The report's four figures need nothing more, and a plotting library costs every run's aggregate
its import and its drawing (matplotlib: 0.7 to 1.8 s of a run of one small file, more than the
rest of the aggregate; docs/performance.md). Text stays text, so a test or ``grep`` finds a
mini-batch's name in the page; nothing is scripted, so it shows the same where scripts are blocked.

>>> nice_ticks(0, 7.3)
[0, 2, 4, 6]
>>> nice_ticks(0, 0)
[0]
>>> chart = Chart(xlabel="seconds")
>>> panel = chart.panel((0, 10), (0, 5), ylabel="items / s")
>>> panel.rect(1, 3, 0, 2, "#30638e")
>>> svg = chart.svg()
>>> svg.startswith("<svg") and svg.endswith("</svg>") and "items / s" in svg
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

#: Colours of successive lines, matplotlib's default cycle (``tab10``).
LINE_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
WIDTH, LEFT, RIGHT, TOP, BOTTOM, GAP = 720, 122, 14, 10, 38, 30
FONT = 'font-family="DejaVu Sans,Arial,sans-serif"'


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Return round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) from ``low`` to ``high``."""
    span = high - low
    if span <= 0 or not math.isfinite(span):
        return [low]
    magnitude = 10 ** math.floor(math.log10(span / count))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if span / (m * magnitude) <= count)
    first = math.ceil(low / step - 1e-9)
    return [_round(n * step) for n in range(first, math.floor(high / step + 1e-9) + 1)]


def _round(value: float) -> float:
    rounded = round(value, 10)
    return int(rounded) if rounded == int(rounded) else rounded


def _num(value: float) -> str:
    return f"{value:.6g}"


class Panel:
    """One plot area: its data ranges, its pixel box, and what is drawn in it."""

    def __init__(
        self,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        box: tuple[float, float],
        *,
        ylabel: str = "",
        lanes: Sequence[str] = (),
        grid: bool = False,
    ) -> None:
        self.x0, self.x1 = x_range if x_range[1] > x_range[0] else (x_range[0], x_range[0] + 1)
        self.y0, self.y1 = y_range if y_range[1] > y_range[0] else (y_range[0], y_range[0] + 1)
        self.top, self.height = box
        self.ylabel, self.lanes, self.grid = ylabel, list(lanes), grid
        self.parts: list[str] = []
        self.legend: list[tuple[str, str]] = []

    def x(self, value: float) -> float:
        return LEFT + (value - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        # Lanes read from the top (the first lane first); values from the bottom up.
        fraction = (value - self.y0) / (self.y1 - self.y0)
        return self.top + (fraction if self.lanes else 1 - fraction) * self.height

    def rect(self, x0: float, x1: float, y0: float, y1: float, colour: str) -> None:
        left, right = sorted((self.x(x0), self.x(x1)))
        top, bottom = sorted((self.y(y0), self.y(y1)))
        self.parts.append(
            f'<rect x="{left:.2f}" y="{top:.2f}" width="{max(right - left, 0.3):.2f}" '
            f'height="{bottom - top:.2f}" fill="{colour}"/>'
        )

    def stairs(self, values: Sequence[float], edges: Sequence[float], colour: str) -> None:
        """Fill the steps of ``values`` between consecutive ``edges`` down to zero."""
        points = [(edges[0], 0.0)]
        for value, left, right in zip(values, edges, edges[1:], strict=False):
            points += [(left, value), (right, value)]
        points.append((edges[len(values)], 0.0))
        self.parts.append(f'<polygon points="{self._points(points)}" fill="{colour}"/>')

    def line(self, points: Sequence[tuple[float, float]], colour: str, label: str = "") -> None:
        self.parts.append(f'<polyline points="{self._points(points)}" fill="none" stroke="{colour}"/>')
        if label:
            self.legend.append((label, colour))

    def vline(self, value: float, colour: str, label: str = "") -> None:
        x = self.x(value)
        self.parts.append(
            f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{self.top}" y2="{self.top + self.height}" '
            f'stroke="{colour}"/>'
        )
        if label:
            self.parts.append(
                f'<text transform="translate({x - 3:.2f},{self.top + 4}) rotate(-90)" text-anchor="end" '
                f'font-size="7">{escape(label)}</text>'
            )

    def _points(self, points: Sequence[tuple[float, float]]) -> str:
        return " ".join(f"{self.x(a):.2f},{self.y(b):.2f}" for a, b in points)

    def axes(self) -> list[str]:
        """Return the frame, the ticks and their labels, the grid and the legend, as SVG elements."""
        bottom, out = self.top + self.height, []
        for tick in nice_ticks(self.x0, self.x1):
            x = self.x(tick)
            out.append(f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{bottom}" y2="{bottom + 4}" stroke="#000"/>')
            out.append(f'<text x="{x:.2f}" y="{bottom + 14}" text-anchor="middle">{_num(tick)}</text>')
        if self.lanes:
            rows = [(self.y(n), name, 7) for n, name in enumerate(self.lanes)]
        else:
            rows = [(self.y(tick), _num(tick), 10) for tick in nice_ticks(self.y0, self.y1, 5)]
        for y, text, size in rows:
            out.append(f'<line x1="{LEFT - 4}" x2="{LEFT}" y1="{y:.2f}" y2="{y:.2f}" stroke="#000"/>')
            out.append(
                f'<text x="{LEFT - 6}" y="{y + size / 3:.2f}" text-anchor="end" font-size="{size}">'
                f"{escape(text)}</text>"
            )
            if self.grid:
                out.append(
                    f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.2f}" y2="{y:.2f}" '
                    'stroke="#000" stroke-opacity="0.15"/>'
                )
        if self.ylabel:
            middle = self.top + self.height / 2
            out.append(
                f'<text transform="translate(14,{middle:.2f}) rotate(-90)" text-anchor="middle" '
                f'font-size="9">{escape(self.ylabel)}</text>'
            )
        for n, (label, colour) in enumerate(self.legend):
            x, y = LEFT + 8 + (n % 4) * 140, self.top + 10 + (n // 4) * 10
            out.append(f'<line x1="{x}" x2="{x + 14}" y1="{y - 2}" y2="{y - 2}" stroke="{colour}"/>')
            out.append(f'<text x="{x + 18}" y="{y + 1}" font-size="7">{escape(label)}</text>')
        width = WIDTH - LEFT - RIGHT
        out.append(
            f'<rect x="{LEFT}" y="{self.top}" width="{width}" height="{self.height}" '
            'fill="none" stroke="#000"/>'
        )
        return out


class Chart:
    """Panels stacked from the top, the last with the x axis's label under it."""

    def __init__(self, xlabel: str) -> None:
        self.xlabel = xlabel
        self.panels: list[Panel] = []
        self.bottom: float = TOP

    def panel(
        self,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        *,
        height: float = 150,
        ylabel: str = "",
        lanes: Sequence[str] = (),
        grid: bool = False,
    ) -> Panel:
        top = self.bottom + (GAP if self.panels else 0)
        panel = Panel(x_range, y_range, (top, height), ylabel=ylabel, lanes=lanes, grid=grid)
        self.panels.append(panel)
        self.bottom = top + height
        return panel

    def svg(self) -> str:
        height = self.bottom + BOTTOM
        body = [part for panel in self.panels for part in (*panel.parts, *panel.axes())]
        label = (
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{height - 6}" text-anchor="middle">'
            f"{escape(self.xlabel)}</text>"
        )
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}pt" height="{height:.0f}pt" '
            f'viewBox="0 0 {WIDTH} {height:.0f}" {FONT} font-size="10">' + "".join(body) + label + "</svg>"
        )


__all__ = ["LINE_COLOURS", "Chart", "Panel", "nice_ticks"]
