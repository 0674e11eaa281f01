"""Opening the TUI on a study, and what is printed when it closes."""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from tui_tuner.compose import LateSignals, load_adapters, run_study
from tui_tuner.core.events import Event, GpuSampled, ServerFiguresRead
from tui_tuner.engine.orchestrator import StudyOutcome
from tui_tuner.engine.steering import Steering
from tui_tuner.report.console import JsonlSink
from tui_tuner.report.summary import end_of_study, own_command
from tui_tuner.study_dir import StudySetup
from tui_tuner.ui.app import TunerApp
from tui_tuner.ui.themes import load_theme

__all__ = ["run_tui"]


def run_tui(
    setup: StudySetup, *, guidellm: Path, theme: str | None, events_jsonl: Path | None = None
) -> int:
    """Run the study under the TUI; on exit print the best trial(s) and the command to paste."""
    chosen = load_theme(theme) if theme else None
    app: TunerApp | None = None

    hangup = False

    async def engine(
        setup: StudySetup, emit: Callable[[Event], None], attach: Callable[[Steering], None]
    ) -> StudyOutcome:
        def on_signal(sig: signal.Signals) -> None:
            nonlocal hangup
            assert app is not None
            hangup = hangup or sig == signal.SIGHUP
            app.on_signal(sig)

        if jsonl is not None:
            ui_emit, write = emit, jsonl

            def emit(event: Event) -> None:
                ui_emit(event)
                if not isinstance(event, (GpuSampled, ServerFiguresRead)):
                    write(event)  # the study's events; the live figures are the screen's

        outcome = await run_study(
            setup,
            emit,
            guidellm=guidellm,
            on_orchestrator=attach,
            on_signal=on_signal,
            telemetry=True,
        )
        if hangup:
            # The terminal is gone (an SSH session dropped outside tmux). The study is stopped,
            # its servers too, and everything is in the storage; restoring a terminal that no
            # longer exists can hang Textual's exit, so leave at once.
            if jsonl is not None:
                jsonl.close()
            os._exit(128 + signal.SIGHUP)
        return outcome

    jsonl = JsonlSink(events_jsonl) if events_jsonl else None
    app = TunerApp(setup, engine, theme=chosen, before_engine=load_adapters)
    try:
        code = app.run()
    finally:
        if jsonl is not None:
            jsonl.close()
    console = Console(highlight=False)
    with LateSignals() as late:  # the study's answer is printed whole (see LateSignals)
        late.hold()
        records = setup.store.records()
        for item in end_of_study(setup.config, records, setup.study_dir, resumable=False):
            console.print(item, soft_wrap=isinstance(item, Text))
        if app.error:
            console.print(f"[red]the study stopped with an error:[/] {escape(str(app.error))}")
        resume = f"resume with: {own_command()} resume {shlex.quote(str(setup.study_dir))}"
        console.print(Text(resume), soft_wrap=True)
    return code if code is not None else 0
