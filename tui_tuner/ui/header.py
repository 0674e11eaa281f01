"""The header line: study, objective, state, progress, time, and the best result so far."""

from __future__ import annotations

from rich.text import Text

from tui_tuner.ui.model import StudyModel

__all__ = ["header_text"]

_STATE_STYLE = {
    "running": "bold green",
    "paused": "bold yellow",
    "stopping": "bold yellow",
    "finished": "bold",
    "error": "bold red",
    "starting": "dim",
}


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60:d}:{s % 60:02d}"


def header_text(model: StudyModel) -> Text:
    cfg = model.config
    text = Text()
    text.append(f" {cfg.study.name} ", style="bold reverse")
    if model.simulated or cfg.server.simulated:
        text.append(" SIMULATED ", style="bold black on yellow")
    text.append(f" {cfg.objective.kind} ")
    text.append(model.state, style=_STATE_STYLE.get(model.state, ""))
    budget = f"/{model.n_trials}" if model.n_trials else ""
    text.append(f"  trials {model.counted}{budget}")
    text.append(f"  {_clock(model.elapsed_s())}")
    eta = model.eta_s()
    if eta is not None and model.state in ("running", "paused"):
        text.append(f" (~{_clock(eta)} left)", style="dim")
    best = model.best()
    if best and best[0].measurement is not None:
        m = best[0].measurement
        text.append(f"  best #{best[0].number}: {m.output_tok_s:,.0f} tok/s", style="bold")
        text.append(f", p95 {m.request_latency_p95_ms:,.0f} ms")
        gain = model.gain(best[0])
        if gain is not None and not best[0].baseline:
            text.append(f" ({gain.output_tok_s_pct:+.0f}% vs baseline)", style="green")
    if model.state in ("stopping", "finished", "error") and model.reason:
        text.append(f"  {model.reason}", style="dim")
    return text
