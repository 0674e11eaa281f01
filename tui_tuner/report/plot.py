"""A text scatter plot of measured trials: p95 request latency (x) against output tok/s (y).

Each trial is one marker, the Pareto front of the feasible trials is a dotted staircase, and
the axes carry rounded tick values and their units. Which trials are drawn, and with which
marker, is ``plot_points``; the grid, the axes and the legend are ``text_canvas``; this module
lays the plot out and draws it. Markers differ by shape, not only by colour, so the plot reads
the same in a 16-colour tmux, in monochrome and in a log file; Rich styles add colour on top.

Why not textual-plotext (STYLE.md C.14 suggests it): this module lives in ``report/``, which
must not import Textual, so the same plot can be printed by the headless console and in the end
report; plotext would be a second dependency for one chart; its markers and overlap rules are
its own (we need a priority per cell and shape-distinct markers); and its output is harder to
assert on in tests. What plotext would buy (braille resolution, axis formatting) is not needed
for the tens to hundreds of trials a study has. Drawing is O(points + cells): 1000 points on a
100x30 canvas take 2-4 ms.

Pure: Rich only, no Textual, no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.text import Text

from tui_tuner.report.plot_points import MARKERS, PlotPoint, PointKind, points_from
from tui_tuner.report.text_canvas import (
    AXIS_ASCII,
    Frame,
    Grid,
    LegendEntry,
    draw_axes,
    fit_frame,
    legend_width,
    put_legend,
)

__all__ = ["MIN_HEIGHT", "MIN_WIDTH", "PlotPoint", "PointKind", "points_from", "render_pareto"]

#: Below this size the plot degrades to a one-line summary.
MIN_WIDTH = 20
MIN_HEIGHT = 6

X_UNIT = "p95 latency ms"
Y_UNIT = "output tok/s"
_MIN_ROWS = 3
_LINE, _LINE_STYLE = "·", "green"
_UNIT_STYLE = "bold"
#: For terminals without these glyphs: every non-ASCII character the plot draws.
_ASCII = {**AXIS_ASCII, **str.maketrans("★◆●×·", "*#ox.")}


# -- layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Which lines the plot gets: header, ``rows`` of plot, x axis, tick labels, then the x
    unit and the legend on one line (``merged``), on two, or the unit only (``legend`` False);
    if even that does not fit, the x unit moves into the header (``unit_in_header``)."""

    rows: int
    legend: bool
    merged: bool
    unit_in_header: bool


def _layout(height: int, legend_cols: int, width: int) -> _Layout | None:
    merged = legend_cols + 2 + len(X_UNIT) <= width
    for legend, unit_line in ((True, True), (False, True), (False, False)):
        extra = (1 if merged else 2) if legend else int(unit_line)
        rows = height - 3 - extra
        if rows >= _MIN_ROWS:
            return _Layout(rows, legend, merged and legend, not unit_line)
    return None


def _finite(points: Iterable[PlotPoint]) -> list[PlotPoint]:
    return [p for p in points if math.isfinite(p.latency_ms) and math.isfinite(p.tok_s)]


def _legend_entries(points: Sequence[PlotPoint]) -> list[LegendEntry]:
    """(marker, style, label) for each kind present, most important first."""
    present = {p.kind for p in points}
    return [(m.glyph, m.style, m.label) for kind, m in MARKERS.items() if kind in present]


# -- drawing -----------------------------------------------------------------------------------


def render_pareto(
    points: Sequence[PlotPoint],
    width: int,
    height: int,
    *,
    title: str = "",
    ascii_only: bool = False,
) -> Text:
    """Draw ``points`` in exactly ``height`` lines of exactly ``width`` cells.

    Points with a NaN or infinite coordinate are left out. No points, or a box too small for
    axes (about 20x6), give a one-line summary instead of a plot. ``ascii_only`` swaps every
    glyph for ASCII (``* B # o x .`` and ``|+-``) for terminals without them.
    """
    pts = _finite(points)
    if width <= 0 or height <= 0:
        return Text()
    if not pts or width < MIN_WIDTH or height < MIN_HEIGHT:
        return _summary(pts, width)
    entries = _legend_entries(pts)
    layout = _layout(height, legend_width(entries, width), width)
    frame = None
    if layout is not None:
        xs, ys = [p.latency_ms for p in pts], [p.tok_s for p in pts]
        frame = fit_frame(xs, ys, top=1, width=width, rows=layout.rows)
    if layout is None or frame is None:
        return _summary(pts, width)
    grid = Grid(width, height)
    _draw_header(grid, layout, title)
    draw_axes(grid, frame)
    _draw_front(grid, frame, pts)
    _draw_markers(grid, frame, pts)
    _draw_footer(grid, layout, frame.top + layout.rows + 2, entries)
    return grid.to_text(_ASCII if ascii_only else None)


def _draw_header(grid: Grid, layout: _Layout, title: str) -> None:
    """The y unit above the y axis, the title on the right; both units when there is no room
    for a line of their own under the plot."""
    if layout.unit_in_header:
        for line in (f"{Y_UNIT} vs {X_UNIT}", "tok/s vs p95 ms", "tok/s"):
            if len(line) <= grid.width:
                grid.put(0, 0, line, _UNIT_STYLE)
                return
        return
    grid.put(0, 0, Y_UNIT, _UNIT_STYLE)
    if title and len(Y_UNIT) + 2 + len(title) <= grid.width:
        grid.put(0, grid.width - len(title), title)


def _cell(f: Frame, p: PlotPoint) -> tuple[int, int]:
    return f.cell(p.latency_ms, p.tok_s)


def _draw_front(grid: Grid, f: Frame, pts: Sequence[PlotPoint]) -> None:
    """The attainment staircase: right from each front point at its height, then up to the
    next one. It is the edge of what the front dominates (more latency, less throughput),
    so a point under it is beaten by a configuration already found."""
    front = sorted((p for p in pts if p.on_front or p.kind == "front"), key=_by_latency)
    cells = [_cell(f, p) for p in front]
    for (r0, c0), (r1, c1) in itertools.pairwise(cells):
        for c in range(c0, c1 + 1):
            grid.put(r0, c, _LINE, _LINE_STYLE)
        for r in range(min(r0, r1), max(r0, r1) + 1):
            grid.put(r, c1, _LINE, _LINE_STYLE)


def _by_latency(p: PlotPoint) -> tuple[float, float]:
    return (p.latency_ms, p.tok_s)


def _draw_markers(grid: Grid, f: Frame, pts: Sequence[PlotPoint]) -> None:
    """One marker per occupied cell: the highest-priority kind that landed there."""
    winner: dict[tuple[int, int], tuple[int, PointKind]] = {}
    for p in pts:
        cell = _cell(f, p)
        prio = MARKERS[p.kind].priority
        if cell not in winner or prio > winner[cell][0]:
            winner[cell] = (prio, p.kind)
    for (r, c), (_, kind) in winner.items():
        marker = MARKERS[kind]
        grid.put(r, c, marker.glyph, marker.style)


def _draw_footer(grid: Grid, layout: _Layout, row: int, entries: Sequence[LegendEntry]) -> None:
    if layout.legend:
        put_legend(grid, row, entries)
        if layout.merged:
            grid.put(row, grid.width - len(X_UNIT), X_UNIT, _UNIT_STYLE)
            return
        row += 1
    if not layout.unit_in_header:
        grid.put(row, grid.width - len(X_UNIT), X_UNIT, _UNIT_STYLE)


def _summary(pts: Sequence[PlotPoint], width: int) -> Text:
    """One line for a box too small to plot in (or nothing to plot yet)."""
    if not pts:
        line = "no measured trials yet"
    else:
        top = max(pts, key=lambda p: (MARKERS[p.kind].priority, p.tok_s))
        line = (
            f"#{top.number} {_num(top.tok_s)} tok/s {_num(top.latency_ms)} ms p95 "
            f"({top.kind}; {len(pts)} measured)"
        )
    text = Text(line, no_wrap=True, overflow="ellipsis")
    text.truncate(max(width, 0), overflow="ellipsis")
    return text


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) < 1e7 else f"{v:.3g}"
