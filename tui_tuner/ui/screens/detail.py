"""One trial in full: parameters, the whole measurement, timings, the command, the failure."""

from __future__ import annotations

import shlex

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui_tuner.core.trial import PHASES, TrialRecord
from tui_tuner.report.load_plot import load_curve_lines, load_curve_plot
from tui_tuner.ui.header import gain_words
from tui_tuner.ui.model import StudyModel, spread_pct

__all__ = ["TrialDetail", "detail_text"]


def _unit(name: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def detail_text(record: TrialRecord, model: StudyModel) -> str:
    """The trial as Rich markup; every figure with its unit (the unit is in the field name)."""
    r = record
    lines = [f"[b]Trial {r.number}[/b]: {escape(r.label)}" + (" (baseline)" if r.baseline else "")]
    if r.note:
        lines.append(escape(r.note))
    if r.server_of is not None:
        lines.append(f"measured on the server trial {r.server_of} started (a load sweep: "
                     "no launch of its own)")  # fmt: skip
    lines.append("")
    lines.append("[b]Parameters[/b]")
    if r.baseline:
        lines.append("  vLLM defaults: no flag from the search space")
    for key, value in r.params.items():
        lines.append(f"  {escape(key)} = {escape(str(value))}")
    if r.measurement is not None and r.state == "complete":
        lines += ["", "[b]Measurement[/b] (GuideLLM; latencies in ms, rates per second)"]
        for name, value in r.measurement.to_dict().items():
            if name == "load_curve":
                continue  # below, as a plot
            if name == "warnings":
                for w in value:
                    lines.append(f"  [yellow]warning[/]: {escape(str(w))}")
            else:
                lines.append(f"  {name:<26} {_unit(name, value)}")
        gain = model.gain(r)
        if gain is not None and not r.baseline:
            # Better is always a plus: a p95 latency 2.3% higher reads "2% worse", not "+2.3%".
            tok, tok_style = gain_words(gain.output_tok_s_pct, lower_is_better=False,
                                        name="output tok/s")  # fmt: skip
            p95, p95_style = gain_words(gain.request_latency_p95_pct, lower_is_better=True,
                                        name="p95 latency")  # fmt: skip
            lines.append(f"  against the baseline: [{tok_style or 'default'}]{tok}[/], "
                         f"[{p95_style or 'default'}]{p95}[/]")  # fmt: skip
        if r.repeats_output_tok_s:
            runs = ", ".join(f"{v:,.1f}" for v in r.repeats_output_tok_s)
            spread = spread_pct(r.repeats_output_tok_s)
            noise = "" if spread is None else f", spread ±{spread:.1f}%"
            lines.append(f"  output tok/s of each repeat: {runs} (the median is kept{noise})")
        if r.client_limited:
            lines.append("  [yellow]GuideLLM could not keep the load: the figure may be low[/]")
        for key, value in r.constraints.items():
            ok = "met" if value <= 0 else "[red]missed[/]"
            lines.append(f"  constraint {escape(key)}: {value:+,.2f} ({ok})")
        curve = r.measurement.load_curve
        if curve is not None:
            lines += ["", "[b]Load curve[/b] (GuideLLM's goodput search on this server)"]
            lines += [escape(line) for line in load_curve_lines(curve)]
            plot = load_curve_plot(curve)
            if plot is not None:
                lines += ["", plot.markup]
    if r.state == "pruned" and r.partial.get("output_tok_s"):
        p = r.partial
        lines += ["", "[b]Partial figures[/b] (when it was pruned; not a measurement)"]
        lines.append(f"  {p.get('output_tok_s', 0):,.0f} output tok/s after "
                     f"{p.get('elapsed_s', 0):.0f} s, {int(p.get('successful', 0))} requests, "
                     f"{int(p.get('errored', 0))} errors")  # fmt: skip
    if r.failure:
        lines += ["", f"[b][red]Failure[/red][/b]: {escape(str(r.failure.get('class')))}"]
        lines.append(f"  {escape(str(r.failure.get('message', '')))}")
        code = r.failure.get("exit_code")
        lines.append(
            f"  phase {escape(str(r.failure.get('phase')))}, exit code {escape(str(code))}"
        )
        tail = r.failure.get("tail") or []
        if isinstance(tail, list | tuple) and tail:
            lines.append("  last log lines:")
            lines += [f"    {escape(str(t))}" for t in list(tail)[-15:]]
    if r.timings:
        lines += ["", "[b]Timings[/b] (seconds)"]
        for phase in (*PHASES, "load_generator_s", "load_window_s", "total"):
            if phase in r.timings:
                lines.append(f"  {phase:<18} {r.timings[phase]:8.2f}")
    if r.command:
        lines += ["", "[b]Command[/b] (API key hidden)", f"  {escape(shlex.join(r.command))}"]
    if r.files:
        lines += ["", "[b]Files[/b]"] + [f"  {escape(p)}" for p in r.files.values()]
    return "\n".join(lines)


class TrialDetail(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, record: TrialRecord, model: StudyModel) -> None:
        super().__init__()
        self.record, self.model = record, model

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(detail_text(self.record, self.model), id="detail")

    def action_close(self) -> None:
        self.dismiss(None)
