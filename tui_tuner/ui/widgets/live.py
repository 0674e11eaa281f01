"""A running trial in one line: where its load stands, then a sparkline of its throughput.

GuideLLM's own log is mostly set-up dictionaries; what a user wants from it while a trial runs
is one line: how far into the load window, how many requests, how many errors, what rate. The
sparkline plots the server's own generation rate (about once a second, from the
``ServerFiguresRead`` events), or GuideLLM's progress reports where the server gives none, so a
trial that settles, or one that goes wrong, shows before it ends. The raw log is a key away
(``g`` in the app). Redrawn when the model's readings change, and once a second for the clock.
With several trials running it shows the one the live panels follow (``StudyModel.focus``:
the selected one, else the one started last).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from tui_tuner.ui.model import RunningTrial, StudyModel

__all__ = ["TrialLive", "live_text"]


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60:d}:{s % 60:02d}"


def live_text(model: StudyModel, now: float | None = None) -> Text:
    """The line beside the sparkline (pure; tests read it)."""
    run = model.focus
    if run is None:
        if model.reason and model.state in ("finished", "stopping", "error", "paused"):
            return Text(f"{model.state}: {model.reason}", style="dim")
        return Text("no trial running", style="dim")
    now = time.monotonic() if now is None else now
    text = Text()
    text.append(f"#{run.number} ", style="bold")
    text.append(run.phase, style="bold cyan")
    if run.phase not in ("warmup", "measuring") or not run.bench_at:
        text.append(f" {_clock(now - run.phase_since)}")
        return text
    work = model.config.workload
    window = work.warmup_s + work.duration_s
    elapsed = min(window, _elapsed(run, now))
    text.append(f" {elapsed:.0f}/{window:.0f}s")
    rate = run.rates[-1] if run.rates else run.output_tok_s
    if rate is not None:  # 0 too: a server that generates nothing is worth seeing
        text.append(f" · {rate:,.0f} tok/s", style="bold")
    text.append(f" · {run.successful:,} req")
    text.append(f" · {run.errored:,} err", style="red" if run.errored else "")
    return text


def _elapsed(run: RunningTrial, now: float) -> float:
    """Seconds into the load: GuideLLM reports every 10 s, so while the load runs ("active")
    the clock runs on between reports; before that (its own start-up) it stays put."""
    if run.status == "active":
        return run.bench_elapsed_s + max(0.0, now - run.bench_at)
    return run.bench_elapsed_s


class TrialLive(Horizontal):
    """One line: the followed trial's throughput as a sparkline, and its progress in words."""

    DEFAULT_CSS = """
    TrialLive {
        height: 1;
    }
    TrialLive > Static {
        width: auto;
        margin-right: 1;
    }
    TrialLive > Sparkline {
        width: 1fr;
        max-width: 60;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._drawn: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static("", markup=False)
        yield Sparkline([], summary_function=max)

    def update_from(self, model: StudyModel) -> None:
        run = model.focus
        now = time.monotonic()
        text = live_text(model, now)
        rates = None if run is None else (run.number, run.rates_version)
        key = (rates, text.plain)
        if key == self._drawn:
            return
        if self._drawn is None or rates != self._drawn[0]:
            spark = self.query_one(Sparkline)
            spark.data = [] if run is None else list(run.rates)
            spark.display = bool(spark.data)  # an empty one draws a flat line: a false zero
        self._drawn = key
        self.query_one(Static).update(text)
