"""`tune`, `resume`, `validate` and `demo` without the terminal UI: for scripts, CI and logs.

A Rich progress display while the study runs, then the best trial(s), the gain over the baseline
and the `vllm serve` command to paste. Textual is never imported on this path.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from tui_tuner.compose import (
    CONFIG_NAME,
    SPACE_NAME,
    StudySetup,
    check_runnable,
    default_study_dir,
    prepare,
    run_study,
    saved_overrides,
)
from tui_tuner.core.commands import API_KEY_ENV, load_for, serve_command, server_argv
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.config_load import load_config, load_space
from tui_tuner.core.errors import UserError
from tui_tuner.core.events import Event
from tui_tuner.engine.orchestrator import DISK_FULL_REASON
from tui_tuner.report.console import ConsoleSink, JsonlSink
from tui_tuner.report.summary import best_table, outcome_lines

__all__ = [
    "DEMO_CONFIG",
    "demo_setup",
    "resume_setup",
    "run_headless",
    "tune_setup",
    "validate",
]

DEMO_CONFIG = Path(__file__).parent / "demo-sim.yaml"


def _setup(
    config: StudyConfig, study_dir: Path, overrides: Mapping[str, object] | None
) -> StudySetup:
    problems = check_runnable(config)
    if problems:  # every trial would fail, each after a server start: say so now
        raise UserError("cannot start the study: " + "; ".join(problems))
    text = config.source.read_text(encoding="utf-8") if config.source else None
    # Paths in the file are relative to it; the copy kept in the study directory is not next
    # to them, so the resolved paths travel with the study's saved command-line settings.
    keep: dict[str, object] = {
        **(overrides or {}),
        "server.model": config.server.model,
        "server.command": list(config.server.command),
    }
    if config.workload.dataset is not None:
        keep["workload.dataset"] = config.workload.dataset
    return prepare(config, study_dir, text, keep)


def run_headless(
    setup: StudySetup,
    *,
    events_jsonl: Path | None,
    guidellm: str | None,
    console: Console | None = None,
) -> int:
    console = console or Console(highlight=False)
    for note in setup.config.notes:
        console.print(f"[cyan]note:[/] {note}")
    jsonl = JsonlSink(events_jsonl) if events_jsonl else None
    with ConsoleSink(console) as sink:

        def emit(event: Event) -> None:
            sink(event)
            if jsonl is not None:
                jsonl(event)

        try:
            outcome = asyncio.run(run_study(setup, emit, guidellm=guidellm))
        finally:
            if jsonl is not None:
                jsonl.close()
    console.print(best_table(setup.config, outcome.records))
    for line in outcome_lines(setup.config, outcome.records):
        console.print(line, soft_wrap=True)
    if outcome.resumable:
        console.print(f"resume with: tui-tuner resume {shlex.quote(str(setup.study_dir))}")
    if outcome.reason.startswith("stopped by SIG"):
        return 130
    failed = "failed in a row" in outcome.reason or "baseline" in outcome.reason
    failed = failed or outcome.reason.startswith(DISK_FULL_REASON)
    return 1 if failed else 0


def tune_setup(config_path: Path, *, study_dir: Path | None,
               overrides: Mapping[str, object] | None) -> StudySetup:  # fmt: skip
    """The study a configuration file describes (created, or reopened if it exists)."""
    config = load_config(config_path, overrides)
    return _setup(config, study_dir or default_study_dir(config.study.name), overrides)


def resume_setup(study_dir: Path, *, overrides: Mapping[str, object] | None) -> StudySetup:
    """Continue a study from its directory: its kept configuration, with the command-line
    settings it was started with (``--model``, ``--trials``...) and any given now on top, and
    the search space as last edited in the TUI."""
    kept = study_dir / CONFIG_NAME
    if not kept.is_file():
        raise UserError(
            f"{study_dir} is not a study directory: {CONFIG_NAME} is missing "
            "(start a study with `tui-tuner tune CONFIG`)"
        )
    merged = {**saved_overrides(study_dir), **(overrides or {})}
    config = load_config(kept, merged)
    problems = check_runnable(config)
    if problems:
        raise UserError("cannot resume the study: " + "; ".join(problems))
    edited = study_dir / SPACE_NAME
    if edited.is_file():
        config = replace(config, space=load_space(edited))
    return prepare(config, study_dir, None, merged)


def demo_setup(*, study_dir: Path | None, overrides: Mapping[str, object] | None) -> StudySetup:
    config = load_config(DEMO_CONFIG, overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return _setup(config, study_dir or default_study_dir(f"demo-{stamp}"), overrides)


def validate(config_path: Path, *, dry_run: bool, overrides: Mapping[str, object] | None) -> int:
    """Static checks, and with ``dry_run`` the commands a study would run; starts nothing."""
    console = Console(highlight=False)
    config = load_config(config_path, overrides)
    c = config
    console.print(f"{config_path}: valid")
    console.print(
        f"  study {c.study.name}: objective {c.objective.kind}, sampler {c.study.sampler}, "
        f"trials {c.study.n_trials or '-'}, time budget "
        f"{f'{c.study.time_budget_s:g} s' if c.study.time_budget_s else '-'}, baseline "
        f"{'on' if c.study.baseline else 'off'}"
    )
    for term in c.objective.sla:
        console.print(f"  constraint: {term.metric} <= {term.limit:g}")
    if c.objective.latency_vs_baseline:
        console.print("  constraint: p95 request latency <= the baseline's")
    size = c.space.size()
    count = "unbounded (continuous)" if size is None else f"{size:,} configurations"
    console.print(f"  search space: {len(c.space.enabled())} parameters, {count}")
    for p in c.space:
        state = "" if p.enabled else " (disabled)"
        console.print(f"    {p.key}: {p.kind} {p.describe()}{state}")
    for note in c.notes:
        console.print(f"  [cyan]note:[/] {note}")
    problems = check_runnable(c)
    for problem in problems:
        console.print(f"  [yellow]warning:[/] {problem}")
    if dry_run:
        _dry_run(console, c)
    return 0


def _dry_run(console: Console, c: StudyConfig) -> None:
    """The baseline's and a mid-space trial's commands, exactly as a trial would start them."""
    console.print("dry run (nothing is started):")
    mid: dict[str, object] = {}
    for p in c.space.enabled():
        choices = p.choices()
        if choices:
            mid[p.key] = choices[len(choices) // 2]
        elif p.low is not None and p.high is not None:
            mid[p.key] = (p.low + p.high) / 2
    for label, params in (("baseline", {}), ("a trial", mid)):
        argv = server_argv(c.server, params, host=c.server.host, port=8000)
        env = f"{API_KEY_ENV}='<random per trial>' " if c.server.api_key else ""
        console.print(f"  {label} server: {env}{shlex.join(argv)}", soft_wrap=True)
    streams, rate = load_for(c.workload, mid)
    load = (
        f"{streams} concurrent streams" if c.workload.profile == "concurrent" else f"{rate} req/s"
    )
    console.print(
        f"  load: GuideLLM {c.workload.profile}, {load}, {c.workload.warmup_s:g} s warmup + "
        f"{c.workload.duration_s:g} s measured, x{c.workload.repeats}"
    )
    console.print(f"  export would read: {serve_command(c.server, mid)}", soft_wrap=True)
