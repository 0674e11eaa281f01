"""The headless display: a study run without the terminal UI, for scripts, CI and logs.

A Rich progress display while the study runs, then the best trial(s), the gain over the baseline
and the `vllm serve` command to paste. Textual is never imported on this path.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from tui_tuner.compose import LateSignals, run_study
from tui_tuner.core.events import Event
from tui_tuner.core.objectives import best_trials
from tui_tuner.core.stop import exit_code
from tui_tuner.report.console import ConsoleSink, JsonlSink
from tui_tuner.report.export import trial_command
from tui_tuner.report.facts import study_facts
from tui_tuner.report.summary import end_of_study
from tui_tuner.study_dir import StudySetup

__all__ = ["run_headless"]


def run_headless(
    setup: StudySetup,
    *,
    events_jsonl: Path | None,
    guidellm: Path,
    console: Console | None = None,
    json_end: bool = False,
) -> int:
    """Run the study to its end; the exit code says how it ended (`core/stop.py`). With
    ``json_end``, the study's answer is also printed as one JSON object, the last line."""
    console = console or Console(highlight=False)
    for note in setup.config.notes:
        console.print(f"[cyan]note:[/] {escape(note)}")
    jsonl = JsonlSink(events_jsonl) if events_jsonl else None
    with LateSignals() as late:
        with ConsoleSink(console) as sink:

            def emit(event: Event) -> None:
                sink(event)
                if jsonl is not None:
                    jsonl(event)

            try:
                outcome = asyncio.run(run_study(setup, emit, guidellm=guidellm, late=late))
            finally:
                if jsonl is not None:
                    jsonl.close()
        resumable = outcome.stop.resumable
        records = outcome.records
        for item in end_of_study(setup.config, records, setup.study_dir, resumable=resumable):
            console.print(item, soft_wrap=isinstance(item, Text))
        if late.received:
            names = ", ".join(sorted({s.name for s in late.received}))
            console.print(f"({names} arrived after the study had ended; its answer is above)")
    if json_end:
        console.file.flush()
        print(json.dumps(end_json(setup, outcome), default=str, separators=(",", ":")),
              flush=True)  # fmt: skip
    return exit_code(outcome.stop)


def end_json(setup: StudySetup, outcome: Any) -> dict[str, object]:
    """The end of a headless run for scripts: how it stopped, the study's facts, the command."""
    config, records = setup.config, outcome.records
    best = best_trials(config.objective.kind, records)
    return {
        "exit_code": exit_code(outcome.stop),
        "stop": outcome.stop.kind.value,
        "stop_reason": outcome.stop.text,
        "resumable": outcome.stop.resumable,
        "study_dir": str(setup.study_dir),
        **study_facts(config, records),
        "command": trial_command(config, best[0]) if best else None,
    }
