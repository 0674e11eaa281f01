"""The GPU panel: NVML's view of each GPU, and the server's own figures next to it.

Two sources, kept visibly apart. NVML says what the cards are doing (utilisation, memory, power,
temperature); the serving process says what vLLM is doing with them (KV-cache usage, running and
waiting requests, generation tok/s). On the simulator the second source is all there is, and
it is labelled "SIMULATED GPU" so nobody reads a simulated figure as a measurement.

Every figure is printed as text beside its bar: the bars are decoration that survives a
16-colour terminal (block characters, at most three named colours), never the only carrier of a
value. The panel lays itself out for the space it gets: from a 30x6 box (one line per GPU) up to
one detailed block per GPU.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.events import Resize
from textual.widgets import Static

from tui_tuner.core.telemetry import GpuSample, GpuState, ServerFigures

__all__ = ["GpuPanel", "render_gpu_lines"]

_FULL, _EMPTY = "█", "░"
#: Width at which one GPU fits on one detailed line.
_WIDE = 84
#: Simulator lag above which its figures are flagged as distorted.
_LAG_WARN_S = 0.5


class GpuPanel(Static):
    """NVML samples and server figures, redrawn only when either changes or the size does.

    The app calls `update_state` with each GPU sample and `update_figures` with each reading of
    the server's ``/metrics`` (both arrive as engine events, about once a second). Give the
    panel a fixed or fractional height: it picks the most detailed layout that fits that height
    (with ``height: auto`` it always takes the most detailed one).
    """

    DEFAULT_CSS = """
    GpuPanel {
        height: 1fr;
        min-height: 3;
        padding: 0 1;
    }
    """

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__("", name=name, id=id, classes=classes)
        self.border_title = "GPU"
        self._state: GpuState | None = None
        self._figures: ServerFigures | None = None
        self._drawn: tuple[object, ...] | None = None

    @property
    def state(self) -> GpuState | None:
        return self._state

    @property
    def figures(self) -> ServerFigures | None:
        return self._figures

    def update_state(self, state: GpuState) -> None:
        """Show an NVML sample (or the "no NVIDIA GPU found" state it carries)."""
        self._state = state
        self._redraw()

    def update_figures(self, figures: ServerFigures | None) -> None:
        """Show the server's figures; None hides them (no server, or it reports none)."""
        self._figures = figures
        self._redraw()

    def on_resize(self, event: Resize) -> None:
        self._redraw()

    def _redraw(self) -> None:
        size = self.content_size
        width = size.width if size.width > 0 else 40
        height_style, width_style = self.styles.height, self.styles.width
        auto = any(style is not None and style.is_auto for style in (height_style, width_style))
        height = 1000 if auto else size.height if size.height > 0 else 8
        # The dataclasses compare by value, so an unchanged sample causes no repaint.
        key = (self._state, _figures_key(self._figures), width, height)
        if key == self._drawn:
            return
        self._drawn = key
        lines = render_gpu_lines(self._state, self._figures, width, height)
        text = Text("\n").join(lines)
        text.no_wrap, text.overflow = True, "ellipsis"  # join() keeps neither
        # A layout pass repaints the whole screen; only an auto-sized panel needs one, as a
        # panel with a set size keeps its size whatever it shows.
        self.update(text, layout=auto)


def _figures_key(figures: ServerFigures | None) -> object:
    """The figures minus their timestamp: a scrape that changes nothing shown, redraws nothing."""
    if figures is None:
        return None
    return (
        figures.simulated,
        figures.gpu_name,
        _round(figures.kv_cache_usage_pct),
        figures.running,
        figures.waiting,
        _round(figures.generation_tok_s),
        _round(figures.sim_lag_s, 1),
    )


def _round(value: float | None, digits: int = 0) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


# -- layout ---------------------------------------------------------------------------------


def render_gpu_lines(
    state: GpuState | None, figures: ServerFigures | None, width: int, height: int
) -> list[Text]:
    """The panel's lines for a `width` x `height` box: the most detailed layout that fits.

    Pure (no widget, no console), so tests check the text directly. Each section has detail
    levels 2 (a block per GPU), 1 (two lines) and 0 (one line); the combination with the most
    detail that fits `height` wins, the server figures keeping detail longest when they are all
    a simulated run has. If nothing fits, the tersest layout is cut to `height`.
    """
    width = max(1, width)
    height = max(1, height)
    gpu_levels = [_gpu_section(state, level, width) for level in (2, 1, 0)]
    sim_levels = [_sim_section(figures, level, width) for level in (2, 1, 0)]
    sim_first = figures is not None and (state is None or not state.available)
    combos = sorted(
        ((g, s) for g in range(3) for s in range(3)),
        key=lambda gs: (gs[0] + gs[1], gs[1] if sim_first else gs[0]),
    )
    best: list[Text] | None = None
    for g, s in combos:
        top, bottom = gpu_levels[g], sim_levels[s]
        lines = top + bottom
        if top and bottom and len(lines) < height:
            lines = [*top, Text(""), *bottom]  # a blank line between the two sources, if room
        if len(lines) <= height:
            best = lines
            break
    if best is None:
        best = (gpu_levels[2] + sim_levels[2])[:height]
    for line in best:
        line.truncate(width, overflow="ellipsis")
    return best


def _gpu_section(state: GpuState | None, level: int, width: int) -> list[Text]:
    if state is None:
        return [Text("GPU: reading NVML…", style="dim")]
    if not state.available:
        return [Text(_no_gpu(state.reason), style="yellow")]
    out: list[Text] = []
    name_width = max((len(sample.name) for sample in state.samples), default=0)
    for sample in state.samples:
        if level == 2 and width >= _WIDE:
            out.append(_gpu_wide(sample, width, name_width))
        elif level == 2:
            out.extend(_gpu_block(sample, width))
        elif level == 1:
            out.extend(_gpu_two_lines(sample, width))
        else:
            out.append(_gpu_one_line(sample, width))
    if not out:
        out.append(Text("no NVIDIA GPU found (NVML lists no devices)", style="yellow"))
    return out


def _no_gpu(reason: str) -> str:
    """Why there are no GPU figures, in one short line ("no GPU: NVML missing")."""
    reason = reason or "NVML unavailable"
    if "Library Not Found" in reason or "libnvidia-ml" in reason:
        return "no GPU: NVML missing"
    for prefix in ("no NVIDIA GPU found (", "NVML: "):
        if reason.startswith(prefix):
            reason = reason.removeprefix(prefix).removesuffix(")")
    return reason if reason.startswith("no ") else f"no GPU: {reason}"


def _gpu_wide(s: GpuSample, width: int, name_width: int) -> Text:
    """One GPU on one line; fixed-width fields, so the GPUs' bars line up."""
    head, util = f"GPU{s.index} {s.name:<{name_width}}  util ", f" {_pct(s.util_pct):>4}  mem "
    tail = f" {_mem(s):<15} {_power(s):>6} {_temp(s):>6}"
    bar = max(5, min(20, (width - len(head) - len(util) - len(tail) - 1) // 2))
    line = Text(head, style="bold")
    line.append_text(_bar(s.util_pct, bar))
    line.append(util)
    line.append_text(_bar(_mem_pct(s), bar))
    line.append(tail)
    return line


def _gpu_block(s: GpuSample, width: int) -> list[Text]:
    bar = max(4, min(30, width - 22))
    util = Text("util ")
    util.append_text(_bar(s.util_pct, bar))
    util.append(f" {_pct(s.util_pct)}")
    mem = Text("mem  ")
    mem.append_text(_bar(_mem_pct(s), bar))
    mem.append(f" {_mem(s)}")
    return [
        Text.assemble((f"GPU{s.index} ", "bold"), (s.name, "bold")),
        util,
        mem,
        Text(f"     {_power(s)} · {_temp(s)}"),
    ]


def _gpu_two_lines(s: GpuSample, width: int) -> list[Text]:
    bar = max(3, min(20, width - 26))
    first = Text(f"{s.index} ", style="bold")
    first.append_text(_bar(s.util_pct, bar))
    first.append(f" {_pct(s.util_pct)} {_short_name(s.name)}")
    return [first, Text(f"  {_mem(s, short=True)} {_power(s)} {_temp(s)}")]


def _gpu_one_line(s: GpuSample, width: int) -> Text:
    bar = max(2, min(10, width - 28))
    line = Text(f"{s.index} ", style="bold")
    line.append_text(_bar(s.util_pct, bar))
    line.append(f"{_pct(s.util_pct):>5} {_mem(s, short=True)} {_power(s)} {_temp(s)}")
    return line


def _sim_section(figures: ServerFigures | None, level: int, width: int) -> list[Text]:
    if figures is None:
        return []
    if figures.simulated:
        name = _short_name(figures.gpu_name.removeprefix("profile "))
        title = "SIMULATED" + (f" {name}" if name else "")
        if len(title) > width:
            title = f"SIM {name}"  # the name is what the word alone would have cut
        style = "bold reverse yellow"
    else:
        title = "vLLM reports"
        style = "bold"
    kv = figures.kv_cache_usage_pct
    requests = f"run {_int(figures.running)} · wait {_int(figures.waiting)}"
    rate = figures.generation_tok_s
    tok_s = "gen … tok/s" if rate is None else f"gen {rate:,.0f} tok/s"
    lag = figures.sim_lag_s
    lag_line = None if lag is None or lag < _LAG_WARN_S else f"sim lags {lag:.1f} s: distorted"
    if level == 2:
        bar = max(4, min(30, width - 16))
        kv_line = Text("KV cache ")
        kv_line.append_text(_bar(math.nan if kv is None else kv, bar))
        kv_line.append(f" {_pct(kv)}")
        lines = [Text(title, style=style), kv_line, Text(requests), Text(tok_s)]
    elif level == 1:
        lines = [Text(title, style=style), Text(f"KV {_pct(kv)} · {tok_s} · {requests}")]
    else:
        short = "SIM" if figures.simulated else "vLLM"
        lines = [
            Text.assemble(
                (short, style), f" KV {_pct(kv)} r{_int(figures.running)} w{_int(figures.waiting)}"
            )
        ]
        lines[0].append("" if rate is None else f" {rate:,.0f} tok/s")
        lag_line = None
    if lag_line is not None:
        lines.append(Text(lag_line, style="red"))
    return lines


# -- pieces ---------------------------------------------------------------------------------


def _bar(pct: float, width: int) -> Text:
    """`width` cells of block characters, coloured by level; blank for an unknown value."""
    if math.isnan(pct):
        return Text(" " * width)
    filled = round(max(0.0, min(100.0, pct)) / 100.0 * width)
    style = "green" if pct < 70 else "yellow" if pct < 90 else "red"
    return Text.assemble((_FULL * filled, style), (_EMPTY * (width - filled), "dim"))


def _pct(value: float | None) -> str:
    return "?%" if value is None or math.isnan(value) else f"{value:.0f}%"


def _mem_pct(s: GpuSample) -> float:
    if math.isnan(s.mem_used_mib) or math.isnan(s.mem_total_mib) or s.mem_total_mib <= 0:
        return math.nan
    return 100.0 * s.mem_used_mib / s.mem_total_mib


def _mem(s: GpuSample, short: bool = False) -> str:
    used, total = s.mem_used_mib / 1024, s.mem_total_mib / 1024
    text = "/".join(
        "?" if math.isnan(v) else f"{v:.0f}" if short else f"{v:.1f}" for v in (used, total)
    )
    return f"{text}G" if short else f"{text} GiB"


def _power(s: GpuSample) -> str:
    return "? W" if s.power_w is None or math.isnan(s.power_w) else f"{s.power_w:.0f} W"


def _temp(s: GpuSample) -> str:
    return "? °C" if s.temp_c is None or math.isnan(s.temp_c) else f"{s.temp_c:.0f} °C"


def _int(value: int | None) -> str:
    return "?" if value is None else str(value)


def _short_name(name: str) -> str:
    """ "NVIDIA GeForce RTX 4090" -> "RTX 4090": the vendor words carry nothing in a narrow box."""
    for prefix in ("NVIDIA ", "GeForce "):
        name = name.removeprefix(prefix)
    return name
