"""Headless display of a running study: a Rich progress bar and one line per thing that matters.

Log lines are not echoed (they are in each trial's files and in the event stream); phases,
load-generator progress, finished trials and notices are. Works in a dumb terminal and in CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tui_tuner.core.events import (
    BenchProgress,
    Event,
    LogLine,
    Notice,
    StudyFinished,
    StudyStarted,
    StudyStateChanged,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
    to_json,
)
from tui_tuner.report.summary import format_params

__all__ = ["ConsoleSink", "JsonlSink"]


class ConsoleSink:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=True,
        )
        self._task = self.progress.add_task("trials", total=None, status="")
        self._done = 0

    def __enter__(self) -> ConsoleSink:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _print(self, text: str) -> None:
        self.progress.console.print(text)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLine):
            return
        if isinstance(event, StudyStarted):
            self._done = event.finished_before
            sim = " on the [bold yellow]SIMULATED[/] server" if event.simulated else ""
            self._print(
                f"study [bold]{escape(event.study_name)}[/] ({escape(event.objective)}){sim}; "
                f"{event.finished_before} trials done before; storage {escape(event.storage)}"
            )
            self.progress.update(self._task, total=event.n_trials, completed=self._done)
        elif isinstance(event, TrialStarted):
            what = format_params(event.params, baseline=event.baseline)
            self._print(f"trial {event.number}: {escape(what)}")
            self.progress.update(self._task, status=f"trial {event.number}: launching")
        elif isinstance(event, TrialPhaseChanged):
            self.progress.update(
                self._task,
                status=f"trial {event.number}: {escape(event.phase)} ({event.elapsed_s:.0f} s)",
            )
        elif isinstance(event, BenchProgress):
            self.progress.update(
                self._task,
                status=f"trial {event.number}: {escape(event.status)}, {event.successful} ok, "
                f"{event.errored} errors, {event.output_tok_s:,.0f} output tok/s",
            )
        elif isinstance(event, TrialFinished):
            self._finished(event)
        elif isinstance(event, Notice):
            colour = {"info": "cyan", "warning": "yellow", "error": "red"}[event.level]
            where = f"trial {event.number}: " if event.number is not None else ""
            self._print(f"[{colour}]{where}{escape(event.text)}[/]")
        elif isinstance(event, StudyStateChanged):
            if event.state != "finished":
                self._print(f"[bold]{escape(event.state)}[/]: {escape(event.reason)}")
        elif isinstance(event, StudyFinished):
            self._print(f"study finished: {escape(event.reason)}")

    def _finished(self, event: TrialFinished) -> None:
        r = event.record
        if r.state == "running" or r.state == "waiting":
            return
        if r.interrupted:
            self._print(f"  trial {r.number}: [yellow]{escape(r.note)}[/]")
            return
        self._done += 1
        self.progress.update(self._task, completed=self._done, status="")
        t = r.timings
        took = f" in {t['total']:.0f} s" if "total" in t else ""
        if r.duplicate_of is not None:
            self._print(f"  trial {r.number}: [dim]{escape(r.note)}[/]")
        elif r.measurement is not None and r.state == "complete":
            m = r.measurement
            feasible = "" if r.feasible else " [yellow](infeasible: misses a constraint)[/]"
            limited = " [yellow](client-limited?)[/]" if r.client_limited else ""
            reused = "" if r.server_of is None else f" on trial {r.server_of}'s server"
            self._print(
                f"  trial {r.number}: [green]{m.output_tok_s:,.1f} output tok/s[/], p95 "
                f"{m.request_latency_p95_ms:,.0f} ms, TTFT p95 {m.ttft_p95_ms:,.0f} ms"
                f"{took}{reused}{feasible}{limited}"
            )
            if m.load_curve is not None:  # goodput: the load those figures were measured at
                self._print(f"    {escape(m.load_curve.words())}")
        elif r.state == "pruned":
            self._print(f"  trial {r.number}: [yellow]pruned[/]: {escape(r.note)}")
        else:
            failure = r.failure or {}
            self._print(
                f"  trial {r.number}: [red]{escape(r.label)}[/]{took}: "
                f"{escape(str(failure.get('message', r.note)))}"
            )
            if r.files.get("server.log"):
                self._print(f"    log: {escape(r.files['server.log'])}")


class JsonlSink:
    """Writes every event as one JSON line (``--events-jsonl``), flushed as it goes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self._file.write(json.dumps(to_json(event), default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
