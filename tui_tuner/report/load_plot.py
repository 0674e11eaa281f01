"""A goodput search's load curve as a text plot: latency against load, with the SLA line.

One point per probed concurrency (``●`` met the SLA, ``✗`` missed it), the y axis the p95 of
the latency the SLA limits (request latency when it limits it, else TTFT, else ITL), and the
limit drawn across as a dashed line, so the trial detail shows where the curve crosses it.
Pure: Rich only (through ``text_canvas``).
"""

from __future__ import annotations

from rich.text import Text

from tui_tuner.core.load_curve import LoadCurve, LoadLevel
from tui_tuner.report.text_canvas import Grid, draw_axes, fit_frame, put_legend

__all__ = ["load_curve_lines", "load_curve_plot"]

#: GuideLLM objective -> (the level's p95 figure plotted for it, its name).
_PLOTTED = {
    "e2el_ms": ("request_latency_p95_ms", "p95 request latency ms"),
    "ttft_ms": ("ttft_p95_ms", "p95 TTFT ms"),
    "tpot_ms": ("itl_p95_ms", "p95 ITL ms"),
}


def _plotted(curve: LoadCurve) -> tuple[str, str, float | None]:
    for objective, (field, name) in _PLOTTED.items():
        if objective in curve.slo:
            return field, name, curve.slo[objective]
    return "request_latency_p95_ms", "p95 request latency ms", None


def load_curve_plot(curve: LoadCurve, width: int = 64, rows: int = 10) -> Text | None:
    """The plot in ``width`` columns (None when there is too little to draw)."""
    levels = curve.by_load()
    if not levels:
        return None
    field, name, limit = _plotted(curve)
    xs = [float(lv.streams) for lv in levels]
    ys = [float(getattr(lv, field)) for lv in levels]
    span = [*ys, limit] if limit is not None else ys
    grid = Grid(width, rows + 4)
    grid.put(0, 0, f"{name} against concurrent streams")
    frame = fit_frame(xs + [max(xs) + 1.0] * (len(xs) == 1), span, top=1, width=width, rows=rows)
    if frame is None:
        return None
    draw_axes(grid, frame)
    if limit is not None:
        row, _ = frame.cell(xs[0], limit)
        for c in range(frame.xaxis.cells):
            if c % 2 == 0:
                grid.put(row, frame.left + c, "-", "yellow")
    for lv, x, y in zip(levels, xs, ys, strict=True):
        row, col = frame.cell(x, y)
        glyph, style = ("●", "green") if lv.passed else ("✗", "red")
        grid.put(row, col, glyph, style)
    entries = [("●", "green", "met"), ("✗", "red", "missed")]
    if limit is not None:
        entries.append(("--", "yellow", f"SLA {limit:g} ms"))
    put_legend(grid, rows + 3, entries)
    return grid.to_text()


def _level_line(lv: LoadLevel, best: int | None) -> str:
    """One level in about 80 columns; ``?``: too few requests to tell it from the target."""
    mark = "  <- highest meeting the SLA" if lv.streams == best else ""
    verdict = "met" if lv.passed else "missed"
    shaky = " " if lv.resolved else "?"
    return (
        f"  {lv.streams:>5} streams {verdict:<6} {lv.attainment:6.1%}{shaky} "
        f"{lv.requests_per_s:7.2f} req/s {lv.output_tok_s:8.0f} tok/s "
        f"p95 {lv.request_latency_p95_ms:7.0f} ms{mark}"
    )


def load_curve_lines(curve: LoadCurve) -> list[str]:
    """The search in words and a table of its levels, by load (plain text)."""
    objectives = ", ".join(f"{k} <= {v:g}" for k, v in curve.slo.items())
    head = (
        f"{curve.words()}; a level meets it when {curve.target_attainment:.0%} of requests "
        f"meet every objective ({objectives}); ? marks a level with too few requests to be sure"
    )
    return [head, *(_level_line(lv, curve.best_streams) for lv in curve.by_load())]
