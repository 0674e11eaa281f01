"""A text scatter plot of measured trials: p95 request latency (x) against output tok/s (y).

Each trial is one marker, the Pareto front of the feasible trials is a dotted staircase, and
the axes carry rounded tick values and their units. Markers differ by shape, not only by colour
(``★`` best, ``B`` baseline, ``◆`` on the front, ``●`` feasible, ``×`` infeasible), so the plot
reads the same in a 16-colour tmux, in monochrome and in a log file; Rich styles add colour on
top. When several trials fall into one cell the most important marker wins
(best > baseline > front > feasible > infeasible).

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
from typing import Literal

from rich.text import Span, Text

from tui_tuner.core.config import ObjectiveKind
from tui_tuner.core.objectives import best_trials, pareto_front
from tui_tuner.core.trial import TrialRecord

__all__ = ["MIN_HEIGHT", "MIN_WIDTH", "PlotPoint", "PointKind", "points_from", "render_pareto"]

PointKind = Literal["feasible", "infeasible", "baseline", "best", "front"]

#: Below this size the plot degrades to a one-line summary.
MIN_WIDTH = 20
MIN_HEIGHT = 6

X_UNIT = "p95 latency ms"
Y_UNIT = "output tok/s"
_MIN_ROWS = 3
_MIN_COLS = 10
#: Least distance between ticks, in cells: labels up to ~6 characters wide, one row apart.
_X_TICK_SPACING = 10
_Y_TICK_SPACING = 2

#: kind -> (marker, style, legend label, priority); a higher priority wins a shared cell.
_KINDS: dict[str, tuple[str, str, str, int]] = {
    "best": ("★", "bold yellow", "best", 5),
    "baseline": ("B", "bold magenta", "baseline", 4),
    "front": ("◆", "bold green", "front", 3),
    "feasible": ("●", "cyan", "feasible", 2),
    "infeasible": ("×", "red", "infeasible", 1),
}
_LINE, _LINE_STYLE = "·", "green"
_AXIS_STYLE = "dim"
_UNIT_STYLE = "bold"
#: For terminals without these glyphs: every non-ASCII character the plot draws.
_ASCII = str.maketrans("★◆●×·│┤└─┬", "*#ox.|+`-+")


@dataclass(frozen=True)
class PlotPoint:
    """One measured trial as the plot sees it.

    ``kind`` picks the marker; ``on_front`` says the Pareto-front staircase passes through the
    point, which a ``baseline`` or ``best`` point can be too (``front`` points always are).
    """

    number: int
    latency_ms: float
    tok_s: float
    kind: PointKind
    on_front: bool = False


# -- from trials -------------------------------------------------------------------------------

_OBJECTIVES: dict[str, ObjectiveKind] = {k: k for k in ("throughput", "latency", "pareto")}


def points_from(records: Sequence[TrialRecord], objective_kind: str) -> list[PlotPoint]:
    """The plot's points: complete, measured, non-duplicate trials, each with its kind.

    Failed configurations have no measurement and duplicates repeat another trial's figures,
    so neither is drawn. The front is that of the feasible trials, for every objective: even a
    single-objective study shows what throughput each latency bought.
    """
    measured = [
        r
        for r in records
        if r.state == "complete" and r.measurement is not None and r.duplicate_of is None
    ]
    kind = _OBJECTIVES.get(objective_kind)
    if kind is None:
        raise ValueError(f"unknown objective kind {objective_kind!r}")
    best = {r.number for r in best_trials(kind, measured)}
    front = _front_numbers([r for r in measured if r.feasible])
    best_kind: PointKind = "front" if kind == "pareto" else "best"
    out = []
    for r in measured:
        tok_s, latency = _xy(r)
        k: PointKind
        if r.number in best:
            k = best_kind
        elif r.baseline:
            k = "baseline"
        elif r.number in front:
            k = "front"
        else:
            k = "feasible" if r.feasible else "infeasible"
        out.append(PlotPoint(r.number, latency, tok_s, k, on_front=r.number in front))
    return out


def _front_numbers(records: Sequence[TrialRecord]) -> set[int]:
    """Numbers of the trials on the Pareto front, as ``pareto_front`` defines it.

    ``pareto_front`` compares every pair (a second for 1,000 trials on one front), so a sweep
    first drops the trials it proves dominated: in order of latency (then more throughput
    first), one whose throughput is below the best seen so far is beaten by that trial. The
    survivors are a superset of the front, usually a small one, and decide the answer.
    """
    ordered = sorted(records, key=lambda r: (_xy(r)[1], -_xy(r)[0]))
    candidates: list[TrialRecord] = []
    most = -math.inf
    for r in ordered:
        tok_s = _xy(r)[0]
        if tok_s >= most:
            candidates.append(r)
            most = tok_s
    return {candidates[i].number for i in pareto_front([_xy(r) for r in candidates])}


def _xy(r: TrialRecord) -> tuple[float, float]:
    """(tok/s, p95 ms): the order ``pareto_front`` expects."""
    assert r.measurement is not None
    return (r.measurement.output_tok_s, r.measurement.request_latency_p95_ms)


# -- axes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    """A linear axis from ``lo`` to ``hi`` over ``cells`` character cells, with its ticks."""

    lo: float
    hi: float
    cells: int
    ticks: tuple[float, ...]
    labels: tuple[str, ...]

    def cell(self, v: float) -> int:
        """Cell index of value ``v``; 0 is ``lo``."""
        pos = math.floor((v - self.lo) / (self.hi - self.lo) * (self.cells - 1) + 0.5)
        return min(max(pos, 0), self.cells - 1)


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 (times a power of ten) not below ``raw``."""
    exp = math.floor(math.log10(raw))
    base = 10.0**exp
    for f in (1.0, 2.0, 2.5, 5.0, 10.0):
        if f * base >= raw * (1 - 1e-9):
            return f * base
    return 10.0 * base


def _padded(vmin: float, vmax: float) -> tuple[float, float]:
    """Give a zero-width range some room, without crossing zero for positive data."""
    if vmax > vmin:
        return vmin, vmax
    pad = abs(vmin) * 0.1 or 1.0
    lo = vmin - pad
    if vmin >= 0:
        lo = max(lo, 0.0)
    return lo, vmax + pad


def _nice_axis(vmin: float, vmax: float, cells: int, spacing: int) -> _Axis | None:
    """An axis whose ends are round numbers enclosing the data, with as many ticks as fit at
    least ``spacing`` cells apart (but never fewer than two; None if the range overflows)."""
    most = max(2, (cells - 1) // spacing + 1)
    for target in range(most, 1, -1):
        axis = _axis_with(vmin, vmax, cells, target)
        if axis is None or len(axis.ticks) <= most:
            return axis
    return _axis_with(vmin, vmax, cells, 2)


def _axis_with(vmin: float, vmax: float, cells: int, target: int) -> _Axis | None:
    """The axis of about ``target`` ticks (the rounded ends can add one)."""
    lo, hi = _padded(vmin, vmax)
    span = hi - lo
    if not math.isfinite(span) or span <= 0:
        return None
    step = _nice_step(span / max(target - 1, 1))
    if not (math.isfinite(step) and step > 0):
        return None
    lo = math.floor(lo / step + 1e-9) * step
    hi = math.ceil(hi / step - 1e-9) * step
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return None
    n = round((hi - lo) / step)
    if n > cells + 2:
        return None  # float trouble at the edge of the representable range
    ticks = tuple(lo + i * step for i in range(n + 1))
    labels = tuple(_fmt_tick(t, step) for t in ticks)
    return _Axis(lo, hi, cells, ticks, labels)


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _decimals(step: float) -> int:
    """Decimals that show multiples of ``step`` exactly (2.5 needs 1, 0.25 needs 2)."""
    for d in range(10):
        if abs(round(step, d) - step) <= abs(step) * 1e-6:
            return d
    return 10


def _trim(number: str) -> str:
    """``1.50`` -> ``1.5``, ``2.0`` -> ``2``: suffixed labels are short, not aligned."""
    return number.rstrip("0").rstrip(".") if "." in number else number


def _fmt_tick(v: float, step: float) -> str:
    """Short tick label: SI suffix above 10 000, decimals only as the step needs them."""
    if abs(v) < step * 1e-6:
        return "0"
    if abs(v) >= 1e15 or step < 1e-6:
        return f"{v:.2g}"
    for scale, suffix in _SI:
        if abs(v) >= 1e4 and abs(v) >= scale:
            return _trim(f"{v / scale:.{_decimals(step / scale)}f}") + suffix
    return f"{v:.{_decimals(step)}f}"


# -- canvas ------------------------------------------------------------------------------------


class _Grid:
    """Characters and styles of the whole output, written cell by cell, read as Rich Text."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.chars = [[" "] * width for _ in range(height)]
        self.styles: list[list[str]] = [[""] * width for _ in range(height)]

    def put(self, row: int, col: int, text: str, style: str = "") -> None:
        """Write ``text`` from ``col`` on, clipped at the edges."""
        for i, ch in enumerate(text):
            c = col + i
            if 0 <= c < self.width:
                self.chars[row][c] = ch
                self.styles[row][c] = style

    def free(self, row: int, start: int, end: int) -> bool:
        """Whether columns ``start``..``end`` (exclusive) of ``row`` hold only blanks."""
        if start < 0 or end > self.width:
            return False
        return all(ch == " " for ch in self.chars[row][start:end])

    def to_text(self, ascii_only: bool = False) -> Text:
        """One Rich Text, lines joined by newlines, each run of one style a single span."""
        plain = "\n".join("".join(chars) for chars in self.chars)
        if ascii_only:
            plain = plain.translate(_ASCII)
        spans: list[Span] = []
        offset = 0
        for styles in self.styles:
            start = 0
            for c in range(1, self.width + 1):
                if c == self.width or styles[c] != styles[start]:
                    if styles[start]:
                        spans.append(Span(offset + start, offset + c, styles[start]))
                    start = c
            offset += self.width + 1
        return Text(plain, no_wrap=True, overflow="crop", spans=spans)


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


def _layout(height: int, legend_width: int, width: int) -> _Layout | None:
    merged = legend_width + 2 + len(X_UNIT) <= width
    for legend, unit_line in ((True, True), (False, True), (False, False)):
        extra = (1 if merged else 2) if legend else int(unit_line)
        rows = height - 3 - extra
        if rows >= _MIN_ROWS:
            return _Layout(rows, legend, merged and legend, not unit_line)
    return None


def _finite(points: Iterable[PlotPoint]) -> list[PlotPoint]:
    return [p for p in points if math.isfinite(p.latency_ms) and math.isfinite(p.tok_s)]


def _legend_entries(points: Sequence[PlotPoint]) -> list[tuple[str, str, str]]:
    """(marker, style, label) for each kind present, most important first."""
    present = {p.kind for p in points}
    return [(m, style, label) for kind, (m, style, label, _) in _KINDS.items() if kind in present]


def _legend_width(entries: Sequence[tuple[str, str, str]], width: int) -> int:
    total = 0
    for m, _, label in entries:
        w = len(m) + 1 + len(label) + (2 if total else 0)
        if total + w > width:
            break
        total += w
    return total


def _put_legend(grid: _Grid, row: int, entries: Sequence[tuple[str, str, str]]) -> None:
    col = 0
    for m, style, label in entries:
        w = len(m) + 1 + len(label)
        if col + w > grid.width:
            return
        grid.put(row, col, m, style)
        grid.put(row, col + len(m) + 1, label)
        col += w + 2


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
    layout = _layout(height, _legend_width(entries, width), width)
    frame = None if layout is None else _frame(pts, width, layout.rows)
    if layout is None or frame is None:
        return _summary(pts, width)
    grid = _Grid(width, height)
    _draw_header(grid, layout, title)
    _draw_axes(grid, frame)
    _draw_front(grid, frame, pts)
    _draw_markers(grid, frame, pts)
    _draw_footer(grid, layout, frame.top + layout.rows + 2, entries)
    return grid.to_text(ascii_only)


@dataclass(frozen=True)
class _Frame:
    """Where the plot area is: its first row, the column after the y axis, and both axes."""

    top: int
    left: int
    xaxis: _Axis
    yaxis: _Axis

    def cell(self, p: PlotPoint) -> tuple[int, int]:
        """(row, column) of a point in the output."""
        row = self.top + self.yaxis.cells - 1 - self.yaxis.cell(p.tok_s)
        return row, self.left + self.xaxis.cell(p.latency_ms)


def _frame(pts: Sequence[PlotPoint], width: int, rows: int) -> _Frame | None:
    """Axes for the data: the y labels decide the gutter, which decides the x axis's width."""
    toks = [p.tok_s for p in pts]
    yaxis = _nice_axis(min(toks), max(toks), rows, _Y_TICK_SPACING)
    if yaxis is None:
        return None
    left = max(len(s) for s in yaxis.labels) + 1
    if width - left < _MIN_COLS:
        return None
    lats = [p.latency_ms for p in pts]
    xaxis = _nice_axis(min(lats), max(lats), width - left, _X_TICK_SPACING)
    return None if xaxis is None else _Frame(1, left, xaxis, yaxis)


def _draw_header(grid: _Grid, layout: _Layout, title: str) -> None:
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


def _draw_axes(grid: _Grid, f: _Frame) -> None:
    """The y axis with its labels in the gutter, the x axis under the plot, the x labels
    centred on their ticks where they do not run into each other."""
    axis_col = f.left - 1
    for r in range(f.yaxis.cells):
        grid.put(f.top + r, axis_col, "│", _AXIS_STYLE)
    labelled: set[int] = set()
    for value, label in zip(f.yaxis.ticks, f.yaxis.labels, strict=True):
        r = f.top + f.yaxis.cells - 1 - f.yaxis.cell(value)
        if r not in labelled:
            labelled.add(r)
            grid.put(r, axis_col - len(label), label)
            grid.put(r, axis_col, "┤", _AXIS_STYLE)
    bottom = f.top + f.yaxis.cells
    grid.put(bottom, axis_col, "└" + "─" * f.xaxis.cells, _AXIS_STYLE)
    for value, label in zip(f.xaxis.ticks, f.xaxis.labels, strict=True):
        c = f.left + f.xaxis.cell(value)
        grid.put(bottom, c, "┬", _AXIS_STYLE)
        start = min(max(c - len(label) // 2, 0), grid.width - len(label))
        if grid.free(bottom + 1, max(start - 1, 0), min(start + len(label) + 1, grid.width)):
            grid.put(bottom + 1, start, label)


def _draw_front(grid: _Grid, f: _Frame, pts: Sequence[PlotPoint]) -> None:
    """The attainment staircase: right from each front point at its height, then up to the
    next one. It is the edge of what the front dominates (more latency, less throughput),
    so a point under it is beaten by a configuration already found."""
    front = sorted((p for p in pts if p.on_front or p.kind == "front"), key=_by_latency)
    cells = [f.cell(p) for p in front]
    for (r0, c0), (r1, c1) in itertools.pairwise(cells):
        for c in range(c0, c1 + 1):
            grid.put(r0, c, _LINE, _LINE_STYLE)
        for r in range(min(r0, r1), max(r0, r1) + 1):
            grid.put(r, c1, _LINE, _LINE_STYLE)


def _by_latency(p: PlotPoint) -> tuple[float, float]:
    return (p.latency_ms, p.tok_s)


def _draw_markers(grid: _Grid, f: _Frame, pts: Sequence[PlotPoint]) -> None:
    """One marker per occupied cell: the highest-priority kind that landed there."""
    winner: dict[tuple[int, int], tuple[int, str]] = {}
    for p in pts:
        cell = f.cell(p)
        prio = _KINDS[p.kind][3]
        if prio > winner.get(cell, (0, ""))[0]:
            winner[cell] = (prio, p.kind)
    for (r, c), (_, kind) in winner.items():
        marker, style, _, _ = _KINDS[kind]
        grid.put(r, c, marker, style)


def _draw_footer(
    grid: _Grid, layout: _Layout, row: int, entries: Sequence[tuple[str, str, str]]
) -> None:
    if layout.legend:
        _put_legend(grid, row, entries)
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
        top = max(pts, key=lambda p: (_KINDS[p.kind][3], p.tok_s))
        line = (
            f"#{top.number} {_num(top.tok_s)} tok/s {_num(top.latency_ms)} ms p95 "
            f"({top.kind}; {len(pts)} measured)"
        )
    text = Text(line, no_wrap=True, overflow="ellipsis")
    text.truncate(max(width, 0), overflow="ellipsis")
    return text


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) < 1e7 else f"{v:.3g}"
