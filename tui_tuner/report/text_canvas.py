"""A canvas of character cells for charts drawn as text: a grid read back as Rich Text, linear
axes with round tick values, and a frame that places two axes and maps values to cells.

General: it knows numbers, cells and styles, nothing about trials or what a chart shows (see
``report/plot.py`` for the one chart that uses it). Pure: Rich only, no Textual, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.text import Span, Text

__all__ = [
    "AXIS_ASCII",
    "Axis",
    "Frame",
    "Grid",
    "LegendEntry",
    "draw_axes",
    "fit_frame",
    "legend_width",
    "nice_axis",
    "put_legend",
]

#: ASCII stand-ins for the axis glyphs, for ``Grid.to_text`` on terminals without them.
AXIS_ASCII = str.maketrans("│┤└─┬", "|+`-+")
_AXIS_STYLE = "dim"
#: Least distance between ticks, in cells: labels up to ~6 characters wide, one row apart.
_X_TICK_SPACING = 10
_Y_TICK_SPACING = 2
#: Fewest columns right of the y axis worth drawing.
_MIN_COLS = 10

#: (glyph, style, label) of one legend entry.
LegendEntry = tuple[str, str, str]


# -- grid --------------------------------------------------------------------------------------


class Grid:
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

    def to_text(self, table: Mapping[int, int] | None = None) -> Text:
        """One Rich Text, lines joined by newlines, each run of one style a single span;
        ``table`` (from ``str.maketrans``) swaps characters, such as glyphs for ASCII."""
        plain = "\n".join("".join(chars) for chars in self.chars)
        if table is not None:
            plain = plain.translate(table)
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


# -- axes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
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


def nice_axis(vmin: float, vmax: float, cells: int, spacing: int) -> Axis | None:
    """An axis whose ends are round numbers enclosing the data, with as many ticks as fit at
    least ``spacing`` cells apart (but never fewer than two; None if the range overflows)."""
    most = max(2, (cells - 1) // spacing + 1)
    for target in range(most, 1, -1):
        axis = _axis_with(vmin, vmax, cells, target)
        if axis is None or len(axis.ticks) <= most:
            return axis
    return _axis_with(vmin, vmax, cells, 2)


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


def _axis_with(vmin: float, vmax: float, cells: int, target: int) -> Axis | None:
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
    return Axis(lo, hi, cells, ticks, labels)


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


# -- frame -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """Where the plot area is: its first row, the column after the y axis, and both axes."""

    top: int
    left: int
    xaxis: Axis
    yaxis: Axis

    def cell(self, x: float, y: float) -> tuple[int, int]:
        """(row, column) of the value pair in the output."""
        row = self.top + self.yaxis.cells - 1 - self.yaxis.cell(y)
        return row, self.left + self.xaxis.cell(x)


def fit_frame(
    xs: Sequence[float], ys: Sequence[float], *, top: int, width: int, rows: int
) -> Frame | None:
    """Axes for the data, ``rows`` high from row ``top``, in ``width`` columns: the y labels
    decide the gutter, which decides the x axis's width. None if that leaves too little room
    or a range overflows."""
    yaxis = nice_axis(min(ys), max(ys), rows, _Y_TICK_SPACING)
    if yaxis is None:
        return None
    left = max(len(s) for s in yaxis.labels) + 1
    if width - left < _MIN_COLS:
        return None
    xaxis = nice_axis(min(xs), max(xs), width - left, _X_TICK_SPACING)
    return None if xaxis is None else Frame(top, left, xaxis, yaxis)


def draw_axes(grid: Grid, f: Frame) -> None:
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


# -- legend ------------------------------------------------------------------------------------


def legend_width(entries: Sequence[LegendEntry], width: int) -> int:
    """Columns the entries that fit in ``width`` take on one line, two blanks apart."""
    total = 0
    for m, _, label in entries:
        w = len(m) + 1 + len(label) + (2 if total else 0)
        if total + w > width:
            break
        total += w
    return total


def put_legend(grid: Grid, row: int, entries: Sequence[LegendEntry]) -> None:
    """The entries on ``row`` from the left, as many as fit: styled glyph, blank, label."""
    col = 0
    for m, style, label in entries:
        w = len(m) + 1 + len(label)
        if col + w > grid.width:
            return
        grid.put(row, col, m, style)
        grid.put(row, col + len(m) + 1, label)
        col += w + 2
